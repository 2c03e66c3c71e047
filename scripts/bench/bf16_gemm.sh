#!/usr/bin/env bash
# The bf16 matmul kernels (crates/engine/examples/bf16_bench.rs: AMX, AVX512-BF16, with B packed per call or
# once) against our f32 matmul and PyTorch's f32 and bf16-autocast matmul (scripts/bench/matmul_torch.py) at
# MiniLM's shapes, with achieved TFLOP/s and the share of the CPU's peak. Prints the CPU model and the load.
# Usage: scripts/bench/bf16_gemm.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
if [ -z "${PYTHON:-}" ]; then
  [ -x .venv-torch/bin/python ] || scripts/reference/setup.sh torch
  PYTHON=.venv-torch/bin/python
fi
echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'); flags: $(grep -o -w -E 'amx_bf16|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load before: $(uptime)"
cargo build --release -q -p finetune-engine --example bf16_bench
target/release/examples/bf16_bench "$threads"
"$PYTHON" scripts/bench/matmul_torch.py "$threads"
echo "load after: $(uptime)"
