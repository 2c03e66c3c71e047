#!/usr/bin/env bash
# Runs `finetune export --format onnx` files in ONNX Runtime (not part of CI; needs assets/ from scripts/fetch.sh):
# trains short sentiment and NER models from examples/*.toml (STEPS optimizer steps, default 30), exports each,
# and compares ONNX Runtime's logits with transformers' (the exported directory loaded by
# AutoModelFor{Sequence,Token}Classification) on real texts, padding included. Python: the git-ignored
# .venv-torch (scripts/reference/setup.sh torch: PyTorch, transformers and onnxruntime, pinned).
#   scripts/reference/onnx_check.sh            # FINETUNE_BIN=path skips the release build
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! .venv-torch/bin/python -c "import onnxruntime, transformers, torch" 2>/dev/null; then
  scripts/reference/setup.sh torch
fi
bin=${FINETUNE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p finetune-cli
  bin=target/release/finetune
fi
out=${OUT:-bench-out/onnx-check}
steps=${STEPS:-30}
mkdir -p "$out"
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /'
for task in sentiment ner; do
  "$bin" train --config "examples/$task.toml" --progress off --output-dir "$out/$task" \
    --set max_steps="$steps" --set eval_strategy=no --set save_strategy=no > "$out/$task.train.log" 2>&1
  "$bin" export --model "$out/$task" --format onnx --out "$out/$task.onnx"
done
.venv-torch/bin/python scripts/reference/onnx_check.py "$out"
