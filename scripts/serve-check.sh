#!/usr/bin/env bash
# `finetune serve` against real clients: the official `openai` Python package (pinned, .venv-serve) on
# SmolLM2-135M-Instruct, base and a LoRA run on it, and /predict on a sentiment classifier. Loopback only.
# Needs the assets (scripts/fetch.sh, scripts/fetch-datasets.sh, scripts/make-sft-tasks.sh); trains what is
# missing with short runs (bench-out/serve-*).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-serve/bin/python ] || scripts/reference/setup.sh serve
# FINETUNE_BIN=path skips the release build (e.g. a binary built a moment ago).
bin=${FINETUNE_BIN:-target/release/finetune}
[ -n "${FINETUNE_BIN:-}" ] || cargo build --release --locked -p finetune-cli
out=bench-out/serve-check
mkdir -p "$out"
if [ ! -f bench-out/serve-sentiment/model.safetensors ]; then
  $bin train --config examples/sentiment.toml --set max_steps=60 --set output_dir=bench-out/serve-sentiment \
    --set eval_strategy=no --set save_strategy=no --progress off
fi
if [ ! -f bench-out/serve-lora/adapter_config.json ]; then
  # The e-mail subject example, cut to a few steps and without its evaluation files.
  grep -v -E '^(validation_file|test_file)' examples/sft/email_subject.toml > "$out/lora.toml"
  $bin sft --config "$out/lora.toml" --set max_steps=6 --set output_dir=bench-out/serve-lora \
    --set save_strategy=no --progress off
fi

# Starts `finetune serve` with the given flags, waits for its address line, runs the check, stops it with
# SIGTERM and requires a clean exit.
check() {
  local kind=$1; shift
  $bin serve --port 0 "$@" > "$out/serve.out" 2> "$out/serve.err" &
  local pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
  local url
  url=$(grep -o 'http://[0-9.:]*' "$out/serve.out" | head -1)
  echo "== $kind: $* at $url"
  .venv-serve/bin/python scripts/serve_check.py "$kind" "$url"
  kill -TERM "$pid"
  wait "$pid"
  echo "   (stopped cleanly; access log: $(wc -l < "$out/serve.err") lines)"
}
check classifier --model bench-out/serve-sentiment
check decoder --model assets/SmolLM2-135M-Instruct --model-name smollm2
check decoder --model bench-out/serve-lora --base assets/SmolLM2-135M-Instruct --model-name smollm2-lora
echo "serve check: all passed"
