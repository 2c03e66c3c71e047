#!/usr/bin/env bash
# One fine-tuning step of a MiniLM-shaped BERT (6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522,
# batch 16 x 128, 2 threads): ours (crates/models/examples/bench_step.rs) in f32 and with bf16 = true, against
# PyTorch (scripts/bench/step_torch.py) in f32 and under bf16 autocast. Extra arguments (e.g. --steps 20,
# --batch 32 --seq 32) go to all four. Reports medians (the headline), minima, and CPU time per train step, which
# is less sensitive to other processes on the machine; prints the CPU model, the load and our bf16 kernel.
# PyTorch comes from the git-ignored .venv-torch (scripts/reference/setup.sh torch), or PYTHON=/path/to/python.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
  [ -x .venv-torch/bin/python ] || scripts/reference/setup.sh torch
  PYTHON=.venv-torch/bin/python
fi

echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'); flags: $(grep -o -w -E 'amx_bf16|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load before: $(uptime)"
cargo build --release -q -p finetune-models --example bench_step
ours=$(target/release/examples/bench_step "$@")
echo "$ours"
ours16=$(target/release/examples/bench_step --bf16 "$@")
echo "$ours16"
theirs=$("$PYTHON" scripts/bench/step_torch.py "$@")
echo "$theirs"
theirs16=$("$PYTHON" scripts/bench/step_torch.py --bf16 "$@")
echo "$theirs16"
echo "load after: $(uptime)"

get() { echo "$1" | awk -v k="$2" '$2 == k { print $3 }'; }
echo "our bf16 kernel: $(echo "$ours16" | awk '$2 == "precision" { print $5 }')"
printf "%-14s %12s %12s %12s %16s %14s %14s\n" metric ours_f32 ours_bf16 torch_f32 torch_bf16_autoc f32_ratio bf16_ratio
for k in forward_ms step_ms forward_min_ms step_min_ms step_cpu_ms; do
  o=$(get "$ours" "$k"); o16=$(get "$ours16" "$k"); t=$(get "$theirs" "$k"); t16=$(get "$theirs16" "$k")
  awk -v k="$k" -v o="$o" -v o16="$o16" -v t="$t" -v t16="$t16" \
    'BEGIN { printf "%-14s %12.1f %12.1f %12.1f %16.1f %13.2fx %13.2fx\n", k, o, o16, t, t16, o / t, o16 / t16 }'
done
