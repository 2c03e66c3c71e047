#!/usr/bin/env bash
# Masked-LM domain adaptation on the movie reviews: all-MiniLM-L6-v2 adapted with `task = "fill-mask"` on the
# training reviews' text (examples/mlm.toml's settings on the example's 80/10/10 split; test text is never
# read), then fine-tuned for sentiment with examples/sentiment.toml's settings, against the same fine-tuning
# from the base model, over seeds; each pair compared with `finetune compare` on the same test reviews (paired
# bootstrap, approximate randomisation, McNemar). Prints the adaptation's masked-token metrics, one markdown
# table, the CPU and the load.
#
#   scripts/bench/mlm.sh [SEED...]            (default: 1 2 3; OUT=bench-out/mlm-bench)
#   MLM_EPOCHS=3 MLM_LR=5e-5 REUSE=1 ...      # epochs and learning rate of the adaptation; REUSE keeps finished
#                                             # runs (e.g. the base arm's, copied into a new OUT)
#
# Needs the model and data (scripts/fetch.sh, scripts/fetch-datasets.sh). bf16 = true for every run where the CPU
# has a bf16 kernel (the same in both arms).
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
out=${OUT:-bench-out/mlm-bench}
cargo build --release --locked -q -p finetune-cli
bin=target/release/finetune
data=$out/data
mkdir -p "$data"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
$bin data split assets/data/sentiment/movie_reviews.csv --split 80/10/10 --stratify --seed 42 -o "$data" >/dev/null
bf16=false
grep -qE "amx_bf16|avx512_bf16" /proc/cpuinfo && bf16=true
start=$(date +%s)

done_run() { [ "${REUSE:-0}" = 1 ] && [ -f "$1/all_results.json" ]; }

adapted=$out/adapted
if ! done_run "$adapted"; then
  $bin train --config examples/mlm.toml --progress off --set split=none --set train_file="$data/train.csv" \
    --set validation_file="$data/validation.csv" --set num_train_epochs="${MLM_EPOCHS:-3}" \
    --set learning_rate="${MLM_LR:-5e-5}" --set bf16=$bf16 \
    --set save_strategy=no --set output_dir="$adapted" >"$out/adapted.log" 2>&1 \
    || { tail -5 "$out/adapted.log" >&2; echo "error: adaptation failed" >&2; exit 1; }
fi
mlm_time=$(( $(date +%s) - start ))
python3 - "$adapted" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/all_results.json"))
print(f"adaptation ({r['epoch']:.0f} epochs): {r['train_runtime']:.0f} s, train_loss {r['train_loss']:.3f}; validation masked-token accuracy "
      f"{r['eval_accuracy']:.4f}, perplexity {r['eval_perplexity']:.1f}")
PY

finetune() {
  local name=$1 model=$2 seed=$3
  done_run "$out/$name-$seed" && return
  $bin train --config examples/sentiment.toml --progress off --set split=none --set train_file="$data/train.csv" \
    --set validation_file="$data/validation.csv" --set test_file="$data/test.csv" --set seed="$seed" \
    --set model_name_or_path="$model" --set bf16=$bf16 --set save_strategy=no --set eval_strategy=no \
    --set output_dir="$out/$name-$seed" >"$out/$name-$seed.log" 2>&1 \
    || { tail -5 "$out/$name-$seed.log" >&2; echo "error: run $name-$seed failed" >&2; exit 1; }
}

for s in "${seeds[@]}"; do
  finetune direct assets/all-MiniLM-L6-v2 "$s"
  finetune adapted "$adapted" "$s"
done
echo
echo "fine-tuned from the base model vs from the adapted one (examples/sentiment.toml; macro-F1 on the 1 057 test reviews)"
echo
echo "| seed | base macro-F1 | adapted macro-F1 | delta | p (paired bootstrap) | p (approx. randomisation) | p (McNemar) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for s in "${seeds[@]}"; do
  $bin compare --base "$out/direct-$s" --tuned "$out/adapted-$s" --data "$data/test.csv" --json >"$out/compare-$s.json"
  python3 scripts/bench/compare_row.py "$s" "$out/compare-$s.json"
done
echo
echo "bf16 = $bf16; adaptation $mlm_time s; $(( $(date +%s) - start )) s in all; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
