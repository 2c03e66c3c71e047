#!/usr/bin/env bash
# One fine-tuning step of a MiniLM-shaped BERT (6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522,
# batch 16 x 128, f32, 2 threads): ours (crates/models/examples/bench_step.rs) against PyTorch
# (scripts/bench/step_torch.py). Extra arguments (e.g. --steps 20) go to both. Reports medians (the headline),
# minima, and CPU time per train step, which is less sensitive to other processes on the machine.
#   PYTHON=/path/to/venv/python scripts/bench/step.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/main/.venv-torch/bin/python}"

echo "load before: $(uptime)"
cargo build --release -q -p finetune-models --example bench_step
ours=$(target/release/examples/bench_step "$@")
echo "$ours"
theirs=$("$PYTHON" scripts/bench/step_torch.py "$@")
echo "$theirs"
echo "load after: $(uptime)"

get() { echo "$1" | awk -v k="$2" '$2 == k { print $3 }'; }
for k in forward_ms step_ms forward_min_ms step_min_ms step_cpu_ms; do
  o=$(get "$ours" "$k"); t=$(get "$theirs" "$k")
  awk -v k="$k" -v o="$o" -v t="$t" 'BEGIN { printf "ratio ours/torch %-10s %.2fx  (%.1f ms vs %.1f ms)\n", k, o / t, o, t }'
done
