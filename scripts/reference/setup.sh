#!/usr/bin/env bash
# Creates the git-ignored virtual environment that the reference scripts run in.
#   scripts/reference/setup.sh metrics   -> .venv-ref    (scikit-learn, seqeval, sacrebleu, rouge-score, evaluate)
#   scripts/reference/setup.sh torch     -> .venv-torch  (PyTorch + transformers, for engine/model fixtures)
#   scripts/reference/setup.sh data      -> .venv-data   (transformers without torch, datasketch, pyarrow, datasets: SFT truncation, near-dups, Parquet)
#   scripts/reference/setup.sh serve     -> .venv-serve  (the openai client, for scripts/serve-check.sh)
#   scripts/reference/setup.sh mlflow    -> .venv-mlflow (an MLflow tracking server and client, for scripts/mlflow-check.sh)
#   scripts/reference/setup.sh tensorboard -> .venv-tb   (TensorBoard's event reader, for check_tensorboard.py)
# Never run in CI: the fixtures it produces are committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kind=${1:-metrics}
case "$kind" in
  metrics) venv="$root/.venv-ref"; req="$root/scripts/reference/requirements-metrics.txt"; con="$root/scripts/reference/constraints-metrics.txt" ;;
  data) venv="$root/.venv-data"; req="$root/scripts/reference/requirements-data.txt"; con="$root/scripts/reference/constraints-data.txt" ;;
  torch) venv="$root/.venv-torch"; req="$root/scripts/reference/requirements-torch.txt"; con="$root/scripts/reference/constraints-torch.txt" ;;
  serve) venv="$root/.venv-serve"; req="$root/scripts/reference/requirements-serve.txt"; con="$root/scripts/reference/constraints-serve.txt" ;;
  mlflow) venv="$root/.venv-mlflow"; req="$root/scripts/reference/requirements-mlflow.txt"; con="$root/scripts/reference/constraints-mlflow.txt" ;;
  tensorboard) venv="$root/.venv-tb"; req="$root/scripts/reference/requirements-tensorboard.txt"; con="$root/scripts/reference/constraints-tensorboard.txt" ;;
  *) echo "usage: $0 metrics|torch|data|serve|mlflow|tensorboard" >&2; exit 2 ;;
esac
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# constraints-*.txt pins every transitive package as the fixtures were produced (pip freeze).
"$venv/bin/pip" install -q -r "$req" -c "$con"
echo "$venv ready"
