#!/usr/bin/env bash
# Near-duplicate detection on the SpamAssassin corpus (assets/data/spam/spam_assassin.jsonl, scripts/fetch-datasets.sh):
# `finetune data dedup --near` (release build; word 5-grams, 128 permutations, seed 1, Jaccard >= 0.8) against the
# same computation with datasketch 2.0.0 (scripts/bench/near_dup_ref.py, .venv-data from
# scripts/reference/setup.sh data). Both must find the same candidate and similar pairs; the times are wall clock
# (ours: the whole command including reading and writing; datasketch: hashing, indexing and querying only).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv-data/bin/python}
[ -x "$PYTHON" ] || scripts/reference/setup.sh data
data=assets/data/spam/spam_assassin.jsonl
[ -f "$data" ] || { echo "$data is missing; run scripts/fetch-datasets.sh" >&2; exit 2; }
cargo build --release -q -p finetune-cli
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
echo "load before: $(uptime)"
start=$(date +%s.%N)
ours=$(target/release/finetune data dedup "$data" --near -o "$out/kept.jsonl")
end=$(date +%s.%N)
echo "$ours"
ours_s=$(echo "$end - $start" | bc)
echo "load between: $(uptime)"
theirs=$("$PYTHON" scripts/bench/near_dup_ref.py "$data")
echo "$theirs"
echo "load after: $(uptime)"
theirs_s=$(echo "$theirs" | awk '$1 == "seconds" { print $2 }')
awk -v o="$ours_s" -v t="$theirs_s" 'BEGIN { printf "seconds: ours %.2f, datasketch %.2f, ratio ours/datasketch %.3f\n", o, t, o / t }'
