#!/usr/bin/env bash
# Load test of `finetune serve` on loopback, bounded in count: concurrent clients against the sentiment
# classifier (/predict) and SmolLM2-135M-Instruct (/v1/chat/completions); throughput, p50/p99 latency, errors
# (must be 0) and the server's peak RSS (scripts/bench/serve_load.py). The classifier's reference is the same
# texts through transformers' text-classification pipeline, batched, on the same machine
# (scripts/bench/pipeline_classify.py, .venv-torch). Prints the CPU model and the load.
#   scripts/bench/serve.sh [CLIENTS] [REQUESTS_PER_CLIENT] [TEXTS_PER_REQUEST]
# BF16=1 runs the classifier server with --bf16 as well (after the f32 one), against the pipeline under bf16 autocast.
# INT8=1 runs the decoder server with --int8 as well (after the f32 one). ONLY=decoder skips the classifier part.
set -euo pipefail
cd "$(dirname "$0")/../.."
clients=${1:-8}; requests=${2:-40}; per=${3:-4}
[ -x .venv-torch/bin/python ] || scripts/reference/setup.sh torch
# FINETUNE_BIN=path skips the release build (e.g. a binary built a moment ago).
bin=${FINETUNE_BIN:-target/release/finetune}
[ -n "${FINETUNE_BIN:-}" ] || cargo build --release --locked -q -p finetune-cli
model=bench-out/serve-sentiment
if [ ! -f $model/model.safetensors ]; then
  $bin train --config examples/sentiment.toml --set max_steps=60 --set output_dir=$model \
    --set eval_strategy=no --set save_strategy=no --progress off
fi
texts=assets/data/sentiment/movie_reviews.csv
out=bench-out/serve-bench; mkdir -p $out; rm -f $out/classifier_bf16.json
echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores"
echo "load before: $(uptime)"

serve() {
  $bin serve --port 0 "$@" > $out/serve.out 2> $out/serve.err &
  pid=$!
  for _ in $(seq 600); do grep -q "listening on" $out/serve.out 2>/dev/null && break; sleep 0.1; done
  url=$(grep -o 'http://[0-9.:]*' $out/serve.out | head -1)
}

if [ "${ONLY:-}" != decoder ]; then
echo "== classifier: $clients clients x $requests requests x $per texts, finetune serve ($model, batch 32)"
serve --model $model --max-batch-size 32
python3 scripts/bench/serve_load.py classifier "$url" "$pid" --clients "$clients" --requests "$requests" \
  --per-request "$per" --texts $texts | tee $out/classifier.json
kill -TERM $pid; wait $pid
if [ -n "${BF16:-}" ]; then
  echo "== classifier with --bf16: same load"
  serve --model $model --max-batch-size 32 --bf16
  grep -o 'bf16: .*' $out/serve.err | head -1 || true
  python3 scripts/bench/serve_load.py classifier "$url" "$pid" --clients "$clients" --requests "$requests" \
    --per-request "$per" --texts $texts | tee $out/classifier_bf16.json
  kill -TERM $pid; wait $pid
fi
n=$((clients * requests * per))
echo "== classifier reference: the same $n texts through transformers.pipeline (batch 32)"
.venv-torch/bin/python scripts/bench/pipeline_classify.py $model $texts $n 32 | tee $out/pipeline.json
echo "== the same through the pipeline under bf16 autocast (PyTorch's best CPU mode where AVX512-BF16/AMX exist)"
.venv-torch/bin/python scripts/bench/pipeline_classify.py $model $texts $n 32 --bf16 | tee $out/pipeline_bf16.json
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/classifier.json"))
ref = json.load(open(f"{out}/pipeline.json"))
ref16 = json.load(open(f"{out}/pipeline_bf16.json"))
print(f"vs pipeline under bf16 autocast {ref16['throughput']} texts/s: {ours['throughput'] / ref16['throughput']:.2f}x")
print(f"classifier throughput: finetune serve {ours['throughput']} texts/s (over HTTP, {ours['clients']} clients) "
      f"vs transformers pipeline {ref['throughput']} texts/s (in-process): {ours['throughput'] / ref['throughput']:.2f}x")
try:
    o16 = json.load(open(f"{out}/classifier_bf16.json"))
    print(f"finetune serve --bf16 {o16['throughput']} texts/s vs pipeline under bf16 autocast "
          f"{ref16['throughput']} texts/s: {o16['throughput'] / ref16['throughput']:.2f}x")
except FileNotFoundError:
    pass
PY
fi

echo "== decoder: 4 clients x 4 chat requests (max_tokens 32, greedy), SmolLM2-135M-Instruct"
serve --model assets/SmolLM2-135M-Instruct --max-batch-size 8
python3 scripts/bench/serve_load.py decoder "$url" "$pid" --clients 4 --requests 4 --max-tokens 32 | tee $out/decoder.json
kill -TERM $pid; wait $pid
if [ -n "${INT8:-}" ]; then
  echo "== decoder with --int8: same load"
  serve --model assets/SmolLM2-135M-Instruct --max-batch-size 8 --int8
  grep -o 'int8: .*' $out/serve.err | head -1 || true
  python3 scripts/bench/serve_load.py decoder "$url" "$pid" --clients 4 --requests 4 --max-tokens 32 | tee $out/decoder_int8.json
  kill -TERM $pid; wait $pid
fi
echo "load after: $(uptime)"
