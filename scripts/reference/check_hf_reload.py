"""Loads a model directory written by `finetune train` with transformers' AutoModelForSequenceClassification and
compares its softmax probabilities with `finetune predict` output on the same CSV (single-label models).

    finetune predict --model bench-out/sentiment --data reviews.csv --out preds.jsonl
    .venv-torch/bin/python scripts/reference/check_hf_reload.py bench-out/sentiment reviews.csv preds.jsonl
"""
import csv
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main(model_dir, data, preds, max_length=128, text_column="text"):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = list(csv.DictReader(open(data, newline="", encoding="utf-8")))
    ours = [json.loads(line) for line in open(preds, encoding="utf-8")]
    assert len(ours) == len(rows), f"{len(ours)} predictions for {len(rows)} rows"
    enc = tok([r[text_column] for r in rows], truncation=True, max_length=max_length, padding=True,
              return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits.double(), -1)
    names = model.config.id2label
    diff = max(abs(probs[i, j].item() - ours[i]["probabilities"][names[j]])
               for i in range(len(rows)) for j in range(probs.shape[1]))
    agree = sum(names[int(probs[i].argmax())] == ours[i]["label"] for i in range(len(rows)))
    print(f"{len(rows)} rows: labels agree on {agree}, max |probability difference| {diff:.2e}")
    return 0 if agree == len(rows) and diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
