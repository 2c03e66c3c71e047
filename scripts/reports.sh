#!/usr/bin/env bash
# The five example reports on real data, each rendered in headless Chromium (scripts/report-check.sh: no console
# error, at least N drawn plots, a screenshot):
#   sentiment  finetune train  examples/sentiment.toml   (with report_to=tensorboard, read back by TensorBoard)
#   ner        finetune train  examples/ner.toml
#   spam       finetune train  examples/spam.toml
#   sft        finetune sft    examples/sft/review_sentiment.toml   (LoRA on SmolLM2; test generations)
#   cv         finetune cv     examples/sentiment.toml --folds 3 --set num_train_epochs=1
#
#   scripts/reports.sh [OUT_DIR]      # default bench-out/reports; REPORTS="sentiment cv" runs a subset
#
# Needs the assets (scripts/fetch.sh, fetch-datasets.sh, make-sft-tasks.sh). The TensorBoard check runs when
# scripts/reference/setup.sh tensorboard has made .venv-tb. Prints each run's wall time and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-out/reports}
which=${REPORTS:-sentiment ner spam sft cv}
cargo build --release --locked -q -p finetune-cli
bin=target/release/finetune
mkdir -p "$out"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# run NAME MIN_PLOTS COMMAND...: runs the command (its output in OUT/NAME.log), then checks OUT/NAME/report.html.
run() {
  local name=$1 min=$2
  shift 2
  echo "== $name: $*"
  /usr/bin/time -f "$name: %e s wall, %M KiB peak" "$@" >"$out/$name.log" 2>&1 || {
    tail -20 "$out/$name.log" >&2
    echo "error: $name failed (log: $out/$name.log)" >&2
    exit 1
  }
  tail -1 "$out/$name.log"
  scripts/report-check.sh "$out/$name/report.html" "$out/$name.png" "$min"
}

for r in $which; do
  case $r in
    sentiment)
      run sentiment 12 $bin train --config examples/sentiment.toml --progress lines \
        --set output_dir="$out/sentiment" --set report_to=tensorboard
      if [ -x .venv-tb/bin/python ]; then
        .venv-tb/bin/python scripts/reference/check_tensorboard.py "$out/sentiment"
      else
        echo "TensorBoard check not run: .venv-tb missing (scripts/reference/setup.sh tensorboard)"
      fi ;;
    ner) run ner 8 $bin train --config examples/ner.toml --progress lines --set output_dir="$out/ner" ;;
    spam) run spam 12 $bin train --config examples/spam.toml --progress lines --set output_dir="$out/spam" ;;
    sft) run sft 2 $bin sft --config examples/sft/review_sentiment.toml --progress lines --set output_dir="$out/sft" ;;
    cv)
      run cv 4 $bin cv --config examples/sentiment.toml --folds 3 --set num_train_epochs=1 --progress lines \
        --output-dir "$out/cv" ;;
    *) echo "error: unknown report $r (sentiment, ner, spam, sft, cv)" >&2; exit 2 ;;
  esac
done
echo "reports and screenshots in $out"
