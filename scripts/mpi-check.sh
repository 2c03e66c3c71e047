#!/usr/bin/env bash
# Data-parallel training over MPI on the real example tasks (assets from scripts/fetch.sh, fetch-datasets.sh and
# make-sft-tasks.sh), with the binary built with `--features mpi`:
#   1. the sentiment example (MiniLM, global batch 32) on 1 process with gradient_accumulation_steps 4, on 2 ranks
#      with 2 and on 4 ranks with 1: the three model.safetensors must hash the same; then the 2-rank run's
#      checkpoint resumed on 4 ranks and on 1 process must end at that hash too;
#   2. the review-sentiment LoRA SFT example (SmolLM2-135M) on 1 process with accumulation 2 and on 2 ranks:
#      the adapters must hash the same;
#   3. the cost of the collectives: 1 process × 2 threads against 2 ranks × 1 thread, same global batch, for
#      MiniLM (full) and SmolLM2 (LoRA and full): step time, seconds in collectives and bytes sent per step (rank
#      0's `data_parallel` record in events.jsonl);
#   4. overlap: 2 ranks with DDP's default 25 MiB buckets (leaving during the backward pass) against buckets
#      too large to leave before layer 0 is done (ddp_bucket_cap_mb=100000), MiniLM and SmolLM2 full.
#
#   scripts/mpi-check.sh [equal|scaling|overlap|all]     (default all; needs Open MPI: see the README)
# MPIRUN_ARGS adds mpirun options, e.g. MPIRUN_ARGS="-x OMPI_MCA_mpi_yield_when_idle=1" (ranks yield the core while
# they wait in a collective).
# Prints the CPU and the load; exits non-zero when any pair differs.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
OUT="${OUT:-bench-out/mpi}"
BIN=target/release/finetune
# mpirun refuses to start as root without these (containers).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
command -v mpirun >/dev/null || { echo "mpirun not found: apt-get install openmpi-bin libopenmpi-dev libclang-dev" >&2; exit 2; }
cargo build --release --locked -p finetune-cli --features mpi
for a in assets/all-MiniLM-L6-v2 assets/SmolLM2-135M-Instruct assets/data/sft/review_sentiment.train.jsonl; do
  [[ -e "$a" ]] || { echo "missing $a (scripts/fetch.sh, fetch-datasets.sh, make-sft-tasks.sh)" >&2; exit 2; }
done
mkdir -p "$OUT"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); Open MPI $(mpirun --version | head -1 | awk '{print $NF}')"

# run NP THREADS LOG finetune-args...: NP = 1 is a plain process.
run() {
  local np=$1 threads=$2 log=$3
  shift 3
  rm -rf "${log%.log}"   # the run's output_dir: events.jsonl appends
  if [[ $np == 1 ]]; then
    RAYON_NUM_THREADS=$threads "$BIN" "$@" >"$log" 2>&1
  else
    # shellcheck disable=SC2086  # MPIRUN_ARGS: extra mpirun options, word-split on purpose
    mpirun --oversubscribe --bind-to none -np "$np" -x RAYON_NUM_THREADS="$threads" ${MPIRUN_ARGS:-} "$BIN" "$@" >"$log" 2>&1
  fi || { echo "failed: see $log" >&2; tail -5 "$log" >&2; exit 1; }
}
hash_of() { sha256sum "$1" | cut -c1-16; }
fail=0
same() { # label file file...
  local label=$1 ref h
  shift
  ref=$(hash_of "$1")
  for f in "$@"; do
    h=$(hash_of "$f")
    printf '  %-44s %s %s\n' "${f#"$OUT"/}" "$h" "$([[ $h == "$ref" ]] && echo ok || echo DIFFERS)"
    [[ $h == "$ref" ]] || fail=1
  done
  echo "  -> $label: $([[ $fail == 0 ]] && echo 'bitwise equal' || echo 'NOT equal')"
}

# step STEPS LOG: median-free mean step time from train_results.json, and rank 0's collective figures.
report() {
  python3 - "$@" <<'EOF'
import json, sys
label, d = sys.argv[1], sys.argv[2]
res = json.load(open(f"{d}/train_results.json"))
steps = json.load(open(f"{d}/trainer_state.json"))["global_step"]
line = f"  {label:<40} {1000 * res['train_runtime'] / steps:8.0f} ms/step"
ends = [e for e in map(json.loads, open(f"{d}/events.jsonl")) if e.get("event") == "train_end"]
if "data_parallel" in ends[-1]:
  p = ends[-1]["data_parallel"]
  line += (f"   in collectives {1000 * p['collective_seconds_per_step']:5.0f} ms/step "
           f"({p['bytes_sent_per_step'] / 1e6:5.1f} MB sent/rank), loop waited {1000 * p['exposed_seconds_per_step']:5.0f} ms, "
           f"{p['buckets']} buckets, {p['buckets_sent_during_backward_per_step']:.1f} sent during backward")
print(line)
EOF
}

NOEVAL=(--progress off --set eval_strategy=no --set save_strategy=no --set do_train=true --set do_eval=false
        --set do_predict=false)
M=(train --config examples/sentiment.toml "${NOEVAL[@]}" --set max_steps=6 --set per_device_train_batch_size=16)
if [[ $WHAT == equal || $WHAT == all ]]; then
  echo "== sentiment (MiniLM), 8 steps of 32 reviews, a checkpoint and an evaluation every 4 steps"
  S=(train --config examples/sentiment.toml --progress off --set max_steps=8 --set per_device_train_batch_size=8
     --set eval_strategy=steps --set eval_steps=4 --set save_strategy=steps --set save_steps=4 --set save_total_limit=2)
  run 1 2 "$OUT/s1.log" "${S[@]}" --set gradient_accumulation_steps=4 --set output_dir="$OUT/s1"
  run 2 1 "$OUT/s2.log" "${S[@]}" --set gradient_accumulation_steps=2 --set output_dir="$OUT/s2"
  run 4 1 "$OUT/s4.log" "${S[@]}" --set gradient_accumulation_steps=1 --set output_dir="$OUT/s4"
  run 4 1 "$OUT/s2to4.log" "${S[@]}" --set gradient_accumulation_steps=1 --set output_dir="$OUT/s2to4" \
    --set resume_from_checkpoint="$OUT/s2/checkpoint-4"
  run 1 2 "$OUT/s2to1.log" "${S[@]}" --set gradient_accumulation_steps=4 --set output_dir="$OUT/s2to1" \
    --set resume_from_checkpoint="$OUT/s2/checkpoint-4"
  same "1 process, 2 ranks, 4 ranks, resumed 2 -> 4 and 2 -> 1" \
    "$OUT"/{s1,s2,s4,s2to4,s2to1}/model.safetensors
  echo "  test accuracy: $(for d in s1 s2 s4; do python3 -c "import json,sys; print(json.load(open('$OUT/$d/all_results.json'))['test_accuracy'], end=' ')"; done)"

  echo "== review-sentiment LoRA SFT (SmolLM2-135M), 6 steps of 4 packed rows of 512 tokens"
  L=(sft --config examples/sft/review_sentiment.toml --progress off --set do_train=true --set max_steps=6
     --set per_device_train_batch_size=2 --set save_strategy=no)
  run 1 2 "$OUT/l1.log" "${L[@]}" --set gradient_accumulation_steps=2 --set output_dir="$OUT/l1"
  run 2 1 "$OUT/l2.log" "${L[@]}" --set gradient_accumulation_steps=1 --set output_dir="$OUT/l2"
  same "1 process, 2 ranks" "$OUT"/{l1,l2}/adapter_model.safetensors
fi

if [[ $WHAT == scaling || $WHAT == all ]]; then
  echo "== cost of the collectives: 1 process x 2 threads vs 2 ranks x 1 thread, same global batch"
  run 1 2 "$OUT/m1.log" "${M[@]}" --set gradient_accumulation_steps=2 --set output_dir="$OUT/m1"
  run 2 1 "$OUT/m2.log" "${M[@]}" --set gradient_accumulation_steps=1 --set output_dir="$OUT/m2"
  report "MiniLM full, 1 x 2 threads" "$OUT/m1"
  report "MiniLM full, 2 ranks x 1 thread" "$OUT/m2"
  for mode in lora full; do
    P=(sft --config examples/sft/review_sentiment.toml --progress off --set do_train=true --set max_steps=4
       --set per_device_train_batch_size=2 --set save_strategy=no --set max_seq_length=256)
    [[ $mode == full ]] && P+=(--set use_peft=false --set learning_rate=2e-5)
    run 1 2 "$OUT/p1-$mode.log" "${P[@]}" --set gradient_accumulation_steps=2 --set output_dir="$OUT/p1-$mode"
    run 2 1 "$OUT/p2-$mode.log" "${P[@]}" --set gradient_accumulation_steps=1 --set output_dir="$OUT/p2-$mode"
    report "SmolLM2 $mode, 1 x 2 threads" "$OUT/p1-$mode"
    report "SmolLM2 $mode, 2 ranks x 1 thread" "$OUT/p2-$mode"
  done
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

if [[ $WHAT == overlap || $WHAT == all ]]; then
  echo "== overlap: 2 ranks x 1 thread, default buckets (25 MiB) vs one bucket for all layers (100000 MiB)"
  for cap in 100000 25 100000 25; do
    run 2 1 "$OUT/ov-m-$cap.log" "${M[@]}" --set gradient_accumulation_steps=1 --set ddp_bucket_cap_mb=$cap \
      --set output_dir="$OUT/ov-m-$cap"
    report "MiniLM full, cap $cap MiB" "$OUT/ov-m-$cap"
  done
  F=(sft --config examples/sft/review_sentiment.toml --progress off --set do_train=true --set max_steps=4
     --set per_device_train_batch_size=2 --set save_strategy=no --set max_seq_length=256 --set use_peft=false
     --set learning_rate=2e-5)
  for cap in 100000 25 100000 25; do
    run 2 1 "$OUT/ov-p-$cap.log" "${F[@]}" --set gradient_accumulation_steps=1 --set ddp_bucket_cap_mb=$cap \
      --set output_dir="$OUT/ov-p-$cap"
    report "SmolLM2 full, cap $cap MiB" "$OUT/ov-p-$cap"
  done
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

if [[ $WHAT == scaling || $WHAT == all ]]; then
  # Predicted weak scaling (each node keeps the measured one-process step's batch and time) on a 25 Gb/s network:
  # t(N) = t1 + 2(N-1)/N * bytes / bandwidth + 2(N-1) * latency, with no overlap of communication and backward
  # pass; in brackets with ideal overlap (communication hidden under the backward pass, ~2/3 of t1).
  python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
bw, lat = 25e9 / 8, 20e-6
print(f"== predicted step time and efficiency, 25 Gb/s, {lat * 1e6:.0f} us per message, t1 measured here")
for label, one, ranks in [("MiniLM full", "m1", "m2"), ("SmolLM2 LoRA", "p1-lora", "p2-lora"),
                          ("SmolLM2 full", "p1-full", "p2-full")]:
    res = json.load(open(f"{out}/{one}/train_results.json"))
    t1 = res["train_runtime"] / json.load(open(f"{out}/{one}/trainer_state.json"))["global_step"]
    dp = [json.loads(l)["data_parallel"] for l in open(f"{out}/{ranks}/events.jsonl") if '"data_parallel"' in l][-1]
    nbytes = 4 * dp["gradient_values"]
    cells = []
    for n in [2, 4, 8, 16, 32, 64]:
        comm = 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * lat
        eff, eff_ov = t1 / (t1 + comm), t1 / (t1 + max(0.0, comm - 2 * t1 / 3))
        cells.append(f"{n}: {1000 * (t1 + comm):.0f} ms {100 * eff:.1f}% ({100 * eff_ov:.0f}%)")
    print(f"  {label:<13} t1 {1000 * t1:.0f} ms, {nbytes / 1e6:.1f} MB | " + " | ".join(cells))
PY
fi
exit $fail
