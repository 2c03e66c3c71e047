#!/usr/bin/env bash
# Class imbalance and EDA augmentation on the movie reviews, over training seeds, each treated run against its
# plain run on the same test reviews with `finetune compare` (paired bootstrap, approximate randomisation,
# McNemar). Prints one markdown table per study, the CPU and the load.
#
#   1. imbalance: the training split with the negative class cut to 1 review in 10 (validation and test as they
#      are): plain, class_weight = "balanced", resample = "over"; 1 epoch.
#   2. small data: 500 class-balanced training reviews: plain, [augment] num_aug = 4 with every alpha 0.05 (the
#      paper's setting for small sets); 3 epochs.
#
#   scripts/bench/imbalance.sh [SEED...]        (default: 1 2 3; OUT=bench-out/imbalance)
#
# Needs the model and data (scripts/fetch.sh, scripts/fetch-datasets.sh). bf16 = true for every run where the CPU
# has a bf16 kernel (the same in every arm). The split is the example's (80/10/10, stratified, seed 42).
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
out=${OUT:-bench-out/imbalance}
cargo build --release --locked -q -p finetune-cli
bin=target/release/finetune
data=$out/data
mkdir -p "$data"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

$bin data split assets/data/sentiment/movie_reviews.csv --split 80/10/10 --stratify --seed 42 -o "$data" >/dev/null
# Negative reviews cut to a tenth of the positive count: the first ones in the (already shuffled) split.
python3 - "$data/train.csv" "$data/train-imbalanced.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="", encoding="utf-8")))
pos = [r for r in rows if r["label"] == "positive"]
neg = [r for r in rows if r["label"] == "negative"][: len(pos) // 10]
keep = set(map(id, pos + neg))
with open(sys.argv[2], "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=["text", "label"])
    w.writeheader()
    w.writerows(r for r in rows if id(r) in keep)
print(f"imbalanced training set: {len(pos)} positive, {len(neg)} negative", file=sys.stderr)
PY
$bin data select "$data/train.csv" -n 500 --by class --seed 42 -o "$data/train-500.csv" >/dev/null

bf16=false
$bin train --help | grep -q "bf16" && grep -qE "amx_bf16|avx512_bf16" /proc/cpuinfo && bf16=true

# train NAME SEED TRAIN_FILE EPOCHS [--set ...]: one run of the example's settings on the given training file.
train() {
  local name=$1 seed=$2 file=$3 epochs=$4
  shift 4
  $bin train --config examples/sentiment.toml --progress off --set split=none --set train_file="$file" \
    --set validation_file="$data/validation.csv" --set test_file="$data/test.csv" --set seed="$seed" \
    --set num_train_epochs="$epochs" --set bf16=$bf16 --set save_strategy=no --set eval_strategy=no \
    --set output_dir="$out/$name-$seed" "$@" >"$out/$name-$seed.log" 2>&1 \
    || { tail -5 "$out/$name-$seed.log" >&2; echo "error: run $name-$seed failed" >&2; exit 1; }
}

# row SEED BASE TUNED: the compare table row of two runs on the test reviews.
row() {
  $bin compare --base "$out/$2-$1" --tuned "$out/$3-$1" --data "$data/test.csv" --json >"$out/compare-$2-$3-$1.json"
  python3 scripts/bench/compare_row.py "$1" "$out/compare-$2-$3-$1.json"
}

header() {
  echo
  echo "$1"
  echo
  echo "| seed | $2 macro-F1 | $3 macro-F1 | delta | p (paired bootstrap) | p (approx. randomisation) | p (McNemar) |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
}

start=$(date +%s)
for s in "${seeds[@]}"; do
  train plain "$s" "$data/train-imbalanced.csv" 1
  train weighted "$s" "$data/train-imbalanced.csv" 1 --set class_weight=balanced
  train oversampled "$s" "$data/train-imbalanced.csv" 1 --set resample=over
  train small "$s" "$data/train-500.csv" 3
  train small-eda "$s" "$data/train-500.csv" 3 --set augment=eda --set augment.num_aug=4 \
    --set augment.alpha_sr=0.05 --set augment.alpha_ri=0.05 --set augment.alpha_rs=0.05 --set augment.alpha_rd=0.05
done
header "Imbalanced training data (negative reviews cut to 1 in 10), plain vs class_weight = \"balanced\"" plain weighted
for s in "${seeds[@]}"; do row "$s" plain weighted; done
header "Imbalanced training data, plain vs resample = \"over\"" plain oversampled
for s in "${seeds[@]}"; do row "$s" plain oversampled; done
header "500 training reviews, plain vs EDA (num_aug 4, alpha 0.05)" plain EDA
for s in "${seeds[@]}"; do row "$s" small small-eda; done
echo
echo "bf16 = $bf16; $(( $(date +%s) - start )) s in all; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
