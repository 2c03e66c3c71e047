#!/usr/bin/env bash
# Seed study: the HF Trainer comparison of scripts/bench/trainer.sh repeated over training seeds, on one split.
#   scripts/bench/seeds.sh TASK SEED...        e.g. scripts/bench/seeds.sh ner 1 2 3 4 5 6
# Each seed runs `trainer.sh TASK --seed S` (both sides; the split keeps the example's seed, so every run sees the
# same files) and keeps both all_results.json under bench-out/seeds/TASK/seed-S/. The summary gives each side's
# test metric per seed, mean ± standard deviation (ddof 1), the difference of the means with Welch's 95%
# confidence interval and p-value: a gap one seed shows may be seed noise, a gap the interval excludes 0 for is not.
# Written to bench-out/seeds/TASK/summary.md. Wall times are in each seed's trainer.md; they are not the point here.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 3 ] || { echo "usage: $0 TASK SEED SEED... (at least two seeds)" >&2; exit 2; }
task=$1
shift
for s in "$@"; do
  [[ "$s" =~ ^[0-9]+$ ]] || { echo "seed: expected a non-negative integer, got '$s'" >&2; exit 2; }
done
out=bench-out/seeds/$task
mkdir -p "$out"
for s in "$@"; do
  echo "== $task, seed $s"
  MD="$out/seed-$s.trainer.md" scripts/bench/trainer.sh "$task" --seed "$s"
  mkdir -p "$out/seed-$s"
  cp "bench-out/trainer/$task/ours/all_results.json" "$out/seed-$s/ours.json"
  cp "bench-out/trainer/$task/hf/all_results.json" "$out/seed-$s/hf.json"
done
PYTHON=${PYTHON:-.venv-torch/bin/python}
"$PYTHON" - "$task" "$out" "$@" <<'PY'
import json, statistics, sys
from scipy import stats

task, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
keys = [("test_f1", "test entity F1")] if task == "ner" else [("test_accuracy", "test accuracy"), ("test_f1", "test macro-F1")]
lines = [f"# Seed study: {task}, training seeds {' '.join(seeds)} (`scripts/bench/seeds.sh {task} {' '.join(seeds)}`)", ""]
for key, name in keys:
    ours = [json.load(open(f"{out}/seed-{s}/ours.json"))[key] * 100 for s in seeds]
    hf = [json.load(open(f"{out}/seed-{s}/hf.json"))[key] * 100 for s in seeds]
    lines += [f"## {name} (points)", "", "| seed | ours | HF Trainer | ours - HF |", "| --- | --- | --- | --- |"]
    lines += [f"| {s} | {o:.2f} | {h:.2f} | {o - h:+.2f} |" for s, o, h in zip(seeds, ours, hf)]
    mo, mh = statistics.mean(ours), statistics.mean(hf)
    so, sh = statistics.stdev(ours), statistics.stdev(hf)
    t = stats.ttest_ind(ours, hf, equal_var=False)
    ci = t.confidence_interval(0.95)
    lines += [f"| mean ± std | {mo:.2f} ± {so:.2f} | {mh:.2f} ± {sh:.2f} | {mo - mh:+.2f} |", "",
              f"Difference of means {mo - mh:+.2f} points, Welch 95% CI [{ci.low:+.2f}, {ci.high:+.2f}], "
              f"p = {t.pvalue:.3f} (n = {len(seeds)} per side).", ""]
open(f"{out}/summary.md", "w").write("\n".join(lines))
print("\n".join(lines))
PY
