#!/usr/bin/env bash
# A real sweep: examples/sentiment-sweep.toml (TPE over learning rate, warm-up ratio and weight decay; validation
# accuracy; 1 epoch per trial) run twice with the same seed, with median pruning and without, printing each one's
# wall time, trials pruned and best value; then the pruned sweep's best trial against the example's default
# configuration (`finetune train --config examples/sentiment.toml`, 2 epochs) on the 1 057 test reviews with
# `finetune compare` (bootstrap CIs, paired bootstrap, approximate randomisation, McNemar).
#
#   scripts/bench/sweep.sh [N_TRIALS]       (default 16)
#   EXTRA="--set max_steps=100" scripts/bench/sweep.sh 16      # shorter trials
#   DEFAULT_RUN=bench-out/reports/sentiment scripts/bench/sweep.sh   # reuse a finished default run
#   PRUNERS=none scripts/bench/sweep.sh                              # one arm only
#   EXTRA="--set eval_steps=66" scripts/bench/sweep.sh 16             # fewer evaluations per trial
# Two arms side by side, one core each, so that other work on the machine slows both alike:
#   for p in median none; do OUT=bench-out/sweep-$p PRUNERS=$p RAYON_NUM_THREADS=1 \
#     taskset -c $([ $p = median ] && echo 0 || echo 1) scripts/bench/sweep.sh 16 & done
#
# bf16 = true in the trials where the CPU has a bf16 kernel. Needs scripts/fetch.sh and scripts/fetch-datasets.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-16}
out=${OUT:-bench-out/sweep-bench}
default_run=${DEFAULT_RUN:-$out/default}
cargo build --release --locked -q -p finetune-cli
bin=target/release/finetune
mkdir -p "$out"
bf16=false
grep -qE "amx_bf16|avx512_bf16" /proc/cpuinfo && bf16=true
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), ${RAYON_NUM_THREADS:-$(nproc)} threads; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "trials: $n; bf16 = $bf16; extra: ${EXTRA:-none}"

# Without pruning, the median pruner's own setting is refused by name: a copy of the run file without it.
grep -v '^pruner_n_startup_trials' examples/sentiment-sweep.toml >"$out/sentiment-sweep-none.toml"
for pruner in ${PRUNERS:-median none}; do
  cfg=examples/sentiment-sweep.toml
  [ "$pruner" = none ] && cfg=$out/sentiment-sweep-none.toml
  start=$(date +%s)
  # shellcheck disable=SC2086
  $bin sweep --config "$cfg" --n-trials "$n" --pruner "$pruner" --progress off \
    --set output_dir="$out/$pruner" --set bf16=$bf16 ${EXTRA:-} >"$out/$pruner.log" 2>&1 \
    || { tail -5 "$out/$pruner.log" >&2; exit 1; }
  secs=$(( $(date +%s) - start ))
  python3 - "$pruner" "$secs" "$out/$pruner/sweep_results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
t = r["trials"]
pruned = sum(1 for x in t if x["state"] == "PRUNED")
b = r["best_trial"]
print(f"pruner {sys.argv[1]}: {sys.argv[2]} s wall, {len(t)} trials, {pruned} pruned; best trial {b['number']}: "
      f"{r['objective']} {b['value']:.4f}, params {b['params']}; test accuracy {b['test_metrics']['test_accuracy']:.4f}")
PY
done

if [ ! -f "$default_run/model.safetensors" ]; then
  $bin train --config examples/sentiment.toml --progress off --set output_dir="$default_run" >"$out/default.log" 2>&1
fi
# The best trial of the first arm run (median pruning by default).
arm=$(echo "${PRUNERS:-median none}" | cut -d' ' -f1)
best=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best_trial']['output_dir'])" \
  "$out/$arm/sweep_results.json")
$bin data split assets/data/sentiment/movie_reviews.csv --split 80/10/10 --stratify --seed 42 -o "$out/data" >/dev/null
echo
echo "default configuration ($default_run) against the best trial of the $arm sweep ($best), test reviews:"
$bin compare --base "$default_run" --tuned "$best" --data "$out/data/test.csv"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
