#!/usr/bin/env bash
# Data selection on the movie reviews: 500 training reviews chosen by `finetune data select`, each subset trained
# for the same number of steps (3 epochs of 500 = 48 steps of 32), over seeds; every selected arm against the
# random subset of the same seed on the same test reviews with `finetune compare` (paired bootstrap, approximate
# randomisation, McNemar). Prints one markdown table per arm, the class balance of each subset, the CPU and the
# load.
#
#   random    `--by random --seed S`
#   k-center  `--by k-center --model assets/all-MiniLM-L6-v2 --seed S` (the base encoder's sentence vectors:
#             the normalised mean of its token states)
#   k-center-cls  the same over the last layer's [CLS] states (`--pooling cls`)
#   loss      `--by loss --model <the random arm's model of seed S>` (the 500 hardest reviews, class by class,
#             for a model trained on 500 others)
#
#   scripts/bench/select.sh [SEED...]        (default: 1 2 3; OUT=bench-out/select)
#   REUSE=1 scripts/bench/select.sh           # keep the arms that have finished (their all_results.json)
#   EPOCHS=6 OUT=bench-out/select-6ep scripts/bench/select.sh     # a longer budget (default 3 epochs of 500)
#   KEEP_SELECTIONS=1 ...                     # keep subset files already in $OUT/data (their selection is
#                                             # independent of the budget, except the loss arm's)
#
# Needs the model and data (scripts/fetch.sh, scripts/fetch-datasets.sh). bf16 = true for every run and every
# selection pass where the CPU has a bf16 kernel (the same in every arm). The split is the example's (80/10/10,
# stratified, seed 42).
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
out=${OUT:-bench-out/select}
cargo build --release --locked -q -p finetune-cli
bin=target/release/finetune
data=$out/data
mkdir -p "$data"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
$bin data split assets/data/sentiment/movie_reviews.csv --split 80/10/10 --stratify --seed 42 -o "$data" >/dev/null

bf16=false
grep -qE "amx_bf16|avx512_bf16" /proc/cpuinfo && bf16=true
bf16_flag=()
[ $bf16 = true ] && bf16_flag=(--bf16)

# pick NAME SEED ARGS...: 500 training reviews into $data/NAME-SEED.csv, with the class counts.
pick() {
  local name=$1 seed=$2
  shift 2
  local file=$data/$name-$seed.csv log=$out/select-$name-$seed.log
  if [ "${KEEP_SELECTIONS:-0}" = 1 ] && [ -f "$file" ]; then
    echo "$name seed $seed: kept ($(grep -c ',positive$' "$file") positive, $(grep -c ',negative$' "$file") negative)"
    return
  fi
  if [ "${REUSE:-0}" = 1 ] && [ -f "$out/$name-$seed/all_results.json" ]; then
    echo "$name seed $seed: reused ($(grep -c ',positive$' "$file") positive, $(grep -c ',negative$' "$file") negative)"
    return
  fi
  $bin data select "$data/train.csv" -n 500 -o "$file" "$@" >"$log" || { cat "$log" >&2; exit 1; }
  echo "$name seed $seed: $(grep -c ',positive$' "$file") positive, $(grep -c ',negative$' "$file") negative;" \
    "$(grep '^loss under' "$log" || true)"
}

# train NAME SEED: the example's settings on $data/NAME-SEED.csv for EPOCHS (3) epochs.
train() {
  local name=$1 seed=$2
  [ "${REUSE:-0}" = 1 ] && [ -f "$out/$name-$seed/all_results.json" ] && return
  $bin train --config examples/sentiment.toml --progress off --set split=none --set train_file="$data/$name-$seed.csv" \
    --set validation_file="$data/validation.csv" --set test_file="$data/test.csv" --set seed="$seed" \
    --set num_train_epochs="${EPOCHS:-3}" --set bf16=$bf16 --set save_strategy=no --set eval_strategy=no \
    --set output_dir="$out/$name-$seed" >"$out/$name-$seed.log" 2>&1 \
    || { tail -5 "$out/$name-$seed.log" >&2; echo "error: run $name-$seed failed" >&2; exit 1; }
}

# row SEED TUNED: the compare table row of the random arm against TUNED on the test reviews.
row() {
  $bin compare --base "$out/random-$1" --tuned "$out/$2-$1" --data "$data/test.csv" --json >"$out/compare-$2-$1.json"
  python3 scripts/bench/compare_row.py "$1" "$out/compare-$2-$1.json"
}

start=$(date +%s)
for s in "${seeds[@]}"; do
  pick random "$s" --by random --seed "$s"
  train random "$s"
  pick k-center "$s" --by k-center --seed "$s" --model assets/all-MiniLM-L6-v2 "${bf16_flag[@]}"
  train k-center "$s"
  pick k-center-cls "$s" --by k-center --seed "$s" --pooling cls --model assets/all-MiniLM-L6-v2 "${bf16_flag[@]}"
  train k-center-cls "$s"
  pick loss "$s" --by loss --model "$out/random-$s" "${bf16_flag[@]}"
  train loss "$s"
done
for arm in k-center k-center-cls loss; do
  echo
  echo "500 training reviews, random vs $arm ($(( 16 * ${EPOCHS:-3} )) steps each; macro-F1 on the 1 057 test reviews)"
  echo
  echo "| seed | random macro-F1 | $arm macro-F1 | delta | p (paired bootstrap) | p (approx. randomisation) | p (McNemar) |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for s in "${seeds[@]}"; do row "$s" "$arm"; done
done
echo
echo "bf16 = $bf16; $(( $(date +%s) - start )) s in all; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
