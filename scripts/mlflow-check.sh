#!/usr/bin/env bash
# report_to = ["mlflow"] against a real MLflow tracking server (pinned, .venv-mlflow), loopback only: starts
# `mlflow server` with a SQLite store and proxied artifacts, runs a short `finetune train` on the movie reviews
# and a short `finetune sft` on SmolLM2 with MLflow tracking, then reads both runs back with the `mlflow` client
# (scripts/mlflow_check.py): parameters, every logged metric with its step, the run status, and the final model's
# files as artifacts, byte for byte. Needs the assets (scripts/fetch.sh, scripts/fetch-datasets.sh,
# scripts/make-sft-tasks.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-mlflow/bin/mlflow ] || scripts/reference/setup.sh mlflow
bin=${FINETUNE_BIN:-target/release/finetune}
[ -n "${FINETUNE_BIN:-}" ] || cargo build --release --locked -p finetune-cli
out=bench-out/mlflow-check
rm -rf "$out" && mkdir -p "$out"
port=${MLFLOW_PORT:-5057}
.venv-mlflow/bin/mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri "sqlite:///$PWD/$out/mlflow.db" --artifacts-destination "$PWD/$out/artifacts" \
  > "$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$port/health" > /dev/null || { cat "$out/server.log"; exit 1; }
export MLFLOW_TRACKING_URI="http://127.0.0.1:$port" MLFLOW_EXPERIMENT_NAME=finetune-check
export MLFLOW_TAGS='{"purpose": "check"}'

MLFLOW_RUN_NAME=sentiment $bin train --config examples/sentiment.toml --progress off \
  --set output_dir="$out/sentiment" --set max_steps=20 --set logging_steps=5 --set eval_strategy=steps \
  --set eval_steps=10 --set save_strategy=steps --set save_steps=10 --set report_to=mlflow > "$out/train.log"
grep -v -E '^(validation_file|test_file)' examples/sft/email_subject.toml > "$out/sft.toml"
MLFLOW_RUN_NAME=sft $bin sft --config "$out/sft.toml" --progress off --set output_dir="$out/sft" \
  --set max_steps=4 --set logging_steps=2 --set save_strategy=no --set report_to=mlflow > "$out/sft.log"
.venv-mlflow/bin/python scripts/mlflow_check.py "$out"
echo "mlflow check: all passed"
