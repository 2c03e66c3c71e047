#!/usr/bin/env bash
# Metrics benchmark: the Python references and ours on the same seeded inputs, in one run, with the ratio.
# Needs the reference venv (scripts/reference/setup.sh metrics). Times are medians, data already in memory.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench-out/metrics
[ -x .venv-ref/bin/python ] || scripts/reference/setup.sh metrics
cargo build --release --locked -p finetune-metrics --example bench
.venv-ref/bin/python scripts/bench/metrics_ref.py "$out" > /dev/null
target/release/examples/bench "$out" > /dev/null
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
ref = json.load(open(f"{d}/reference.json"))
ours = json.load(open(f"{d}/ours.json"))
print(f"{'case':<28} {'reference':>10} {'ours':>10} {'speed-up':>9}  same result")
for k, v in ours.items():
    r = ref[k]
    print(f"{k:<28} {r:>9.4f}s {v['seconds']:>9.4f}s {r / v['seconds']:>8.1f}x  {'yes' if v['same'] else 'NO'}")
PY
