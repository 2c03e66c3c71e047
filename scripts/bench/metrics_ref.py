"""Reference side of the metrics benchmark: writes the seeded inputs, then times the Python references on them.

Usage: python scripts/bench/metrics_ref.py OUT_DIR   (run by scripts/bench/metrics.sh)
Writes OUT_DIR/*.txt inputs and OUT_DIR/reference.json with {case: seconds (median of runs)}.
"""
import json
import os
import random
import statistics
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(1234)
nrng = np.random.default_rng(1234)


def timed(fn, runs=3):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


results = {}

# classification_report over 1M labels, 10 classes, ~70% accuracy.
n = 1_000_000
y_true = nrng.integers(0, 10, n)
y_pred = np.where(nrng.random(n) < 0.7, y_true, nrng.integers(0, 10, n))
np.savetxt(os.path.join(out, "cls_true.txt"), y_true, fmt="%d")
np.savetxt(os.path.join(out, "cls_pred.txt"), y_pred, fmt="%d")
from sklearn.metrics import classification_report, roc_auc_score

results["classification_report_1M"] = timed(lambda: classification_report(y_true, y_pred, digits=4))

# roc_auc_score over 1M scores.
labels = nrng.integers(0, 2, n)
scores = np.round(labels * 0.3 + nrng.random(n), 6)  # rounded: realistic ties
np.savetxt(os.path.join(out, "auc_true.txt"), labels, fmt="%d")
np.savetxt(os.path.join(out, "auc_score.txt"), scores, fmt="%.6f")
results["roc_auc_score_1M"] = timed(lambda: roc_auc_score(labels, scores))

# seqeval classification_report over 100k sentences.
from seqeval.metrics import classification_report as seq_report

types = ["PER", "LOC", "ORG", "MISC"]


def sentence():
    tags = []
    length = rng.randint(5, 25)
    while len(tags) < length:
        if rng.random() < 0.2:
            t = rng.choice(types)
            tags.append("B-" + t)
            tags.extend("I-" + t for _ in range(rng.randint(0, 2)))
        else:
            tags.append("O")
    return tags[:length]


def corrupt(tags):
    return [rng.choice(["O", "B-PER", "I-LOC"]) if rng.random() < 0.05 else t for t in tags]


seq_true = [sentence() for _ in range(100_000)]
seq_pred = [corrupt(s) for s in seq_true]
with open(os.path.join(out, "ner_true.txt"), "w") as f:
    f.writelines(" ".join(s) + "\n" for s in seq_true)
with open(os.path.join(out, "ner_pred.txt"), "w") as f:
    f.writelines(" ".join(s) + "\n" for s in seq_pred)
results["seqeval_report_100k"] = timed(lambda: seq_report(seq_true, seq_pred, digits=4), runs=1)

# corpus BLEU and chrF over 10k sentence pairs.
import sacrebleu

vocab = [w.strip() for w in "the a of to and in is was for on that with as by at from it his her an be this which or are were has had not but their they he she its been one new more also after first two who will there can over people year years time said would than some other into world war may city only most during since when state two government".split()]
vocab += ["3.5%", "U.S.", "1,000", "(", ")", ",", ".", "don't", "e-mail", "naïve", "café"]


def sent():
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 40)))


refs = [sent() for _ in range(10_000)]
hyps = [" ".join(w if rng.random() < 0.7 else rng.choice(vocab) for w in r.split()) for r in refs]
with open(os.path.join(out, "mt_hyp.txt"), "w") as f:
    f.writelines(h + "\n" for h in hyps)
with open(os.path.join(out, "mt_ref.txt"), "w") as f:
    f.writelines(r + "\n" for r in refs)
results["corpus_bleu_10k"] = timed(lambda: sacrebleu.corpus_bleu(hyps, [refs]))
results["corpus_chrf_10k"] = timed(lambda: sacrebleu.corpus_chrf(hyps, [refs]))

results["_expected"] = {
    "classification_report_1M": classification_report(y_true, y_pred, digits=4),
    "roc_auc_score_1M": float(roc_auc_score(labels, scores)),
    "seqeval_report_100k": seq_report(seq_true, seq_pred, digits=4),
    "corpus_bleu_10k": sacrebleu.corpus_bleu(hyps, [refs]).score,
    "corpus_chrf_10k": sacrebleu.corpus_chrf(hyps, [refs]).score,
}
with open(os.path.join(out, "reference.json"), "w") as f:
    json.dump(results, f, indent=1)
for k, v in results.items():
    if not k.startswith("_"):
        print(f"{k}: {v:.4f} s")
