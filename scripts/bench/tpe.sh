#!/usr/bin/env bash
# Our TPE sampler beside Optuna's TPESampler (pinned, in the git-ignored .venv-optuna) on Branin, Hartmann-6 and a
# noisy 4-d quadratic: 10 seeds x 50 trials each; prints the median (over seeds) best-so-far value at 20 and 50
# trials for both, and for our random sampler as a baseline. Lower is better.
#   scripts/bench/tpe.sh [SEEDS] [TRIALS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
seeds=${1:-10}
trials=${2:-50}
venv="$root/.venv-optuna"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "optuna==4.5.0" "numpy==2.3.3"
fi
out=$(mktemp -d)
cargo build -q -p finetune-train --example tpe_bench   # sampling quality, not speed: the dev profile is enough
for s in tpe random; do
  target/debug/examples/tpe_bench --sampler "$s" --seeds "$seeds" --trials "$trials" >"$out/ours-$s.jsonl"
done
"$venv/bin/python" scripts/bench/tpe_optuna.py "$seeds" "$trials" >"$out/optuna.jsonl"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "optuna $("$venv/bin/python" -c 'import optuna; print(optuna.__version__)'); $seeds seeds x $trials trials"
"$venv/bin/python" - "$out" "$trials" <<'PY'
import json, sys, glob, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
rows = {}
for path in sorted(glob.glob(f"{out}/*.jsonl")):
    for line in open(path):
        r = json.loads(line)
        rows.setdefault((r["function"], r["sampler"]), []).append(r["best"])
funcs = sorted({f for f, _ in rows}, key=["branin", "hartmann6", "noisy_quadratic"].index)
samplers = ["ours-tpe", "optuna-tpe", "ours-random"]
at = [k for k in (20, n) if k <= n]
print(f"{'function':<16} {'sampler':<12} " + " ".join(f"{'median@'+str(k):>12}" for k in at))
for f in funcs:
    for s in samplers:
        curves = np.array(rows[(f, s)])
        print(f"{f:<16} {s:<12} " + " ".join(f"{np.median(curves[:, k - 1]):>12.5f}" for k in at))
    o, p = np.array(rows[(f, "ours-tpe")]), np.array(rows[(f, "optuna-tpe")])
    print(f"{'':<16} {'ratio':<12} " + " ".join(f"{np.median(o[:, k-1]) / np.median(p[:, k-1]):>12.3f}" for k in at)
          + "   (ours / optuna; for hartmann6 both are negative: > 1 means ours is lower)")
PY
rm -rf "$out"
