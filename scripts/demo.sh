#!/usr/bin/env bash
# The main job: build in release mode and evaluate the bundled examples with the metrics that match
# scikit-learn, seqeval and sacrebleu. (Fine-tuning joins this job once the trainer lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p finetune-cli
bin=target/release/finetune
ex=examples/metrics
echo "== classification (sklearn.metrics.classification_report), with 95% bootstrap CIs and a paired test"
$bin metrics classification --y-true $ex/gold.txt --y-pred $ex/pred.txt --digits 4 --ci --compare $ex/pred_baseline.txt
echo
echo "== named entities (seqeval.metrics.classification_report)"
$bin metrics ner --gold $ex/ner_gold.conll --pred $ex/ner_pred.conll
echo
echo "== translation (sacrebleu.corpus_bleu, corpus_chrf)"
$bin metrics bleu --hyp $ex/hyp.txt --ref $ex/ref.txt
$bin metrics chrf --hyp $ex/hyp.txt --ref $ex/ref.txt --word-order 2
