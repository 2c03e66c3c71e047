"""ONNX Runtime against transformers on `finetune export --format onnx` files (see onnx_check.sh).

    .venv-torch/bin/python scripts/reference/onnx_check.py OUT_DIR

OUT_DIR holds sentiment/ and ner/ (model directories written by `finetune train`) and sentiment.onnx, ner.onnx.
For each: 64 texts (movie reviews; WNUT-16 sentences joined by spaces) tokenized by the directory's tokenizer
(truncation at 128, padded to the longest), logits from ONNX Runtime and from transformers, the largest absolute
difference (HF Optimum's export validation uses atol 1e-4), and whether every argmax agrees.
"""
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]


def texts(task, n=64):
    if task == "sentiment":
        with open(ROOT / "assets/data/sentiment/movie_reviews.csv", newline="", encoding="utf-8") as f:
            return [r["text"] for r in csv.DictReader(f)][:n]
    out, words = [], []
    for line in open(ROOT / "assets/data/ner/wnut16.conll", encoding="utf-8"):
        line = line.strip()
        if not line:
            if words:
                out.append(" ".join(words))
                words = []
            if len(out) == n:
                break
            continue
        words.append(line.split()[0])
    return out


def main(out_dir):
    out_dir = Path(out_dir)
    ok = True
    print(f"onnxruntime {ort.__version__}, transformers {__import__('transformers').__version__}, "
          f"torch {torch.__version__}")
    for task, auto in [("sentiment", AutoModelForSequenceClassification), ("ner", AutoModelForTokenClassification)]:
        model_dir, path = out_dir / task, out_dir / f"{task}.onnx"
        tok = AutoTokenizer.from_pretrained(model_dir)
        hf = auto.from_pretrained(model_dir).eval()
        enc = tok(texts(task), truncation=True, max_length=128, padding=True, return_tensors="np")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feed = {k: enc[k].astype(np.int64) for k in names}
        t0 = time.perf_counter()
        got = sess.run(["logits"], feed)[0]
        ort_s = time.perf_counter() - t0
        with torch.no_grad():
            t0 = time.perf_counter()
            want = hf(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
            hf_s = time.perf_counter() - t0
        mask = enc["attention_mask"].astype(bool)
        if task == "ner":
            # Padding positions carry no prediction; compare the tokens.
            got_c, want_c = got[mask], want[mask]
        else:
            got_c, want_c = got, want
        diff = float(np.abs(got_c - want_c).max())
        agree = int((got_c.argmax(-1) == want_c.argmax(-1)).sum())
        labels = json.loads(sess.get_modelmeta().custom_metadata_map.get("id2label", "{}"))
        print(f"{task}: {path.stat().st_size / 1e6:.1f} MB, inputs {names}, {len(feed['input_ids'])} texts x "
              f"{feed['input_ids'].shape[1]} tokens, {len(labels)} labels in the metadata; max |onnxruntime - "
              f"transformers| {diff:.2e}, argmax agrees on {agree} of {len(got_c)}; "
              f"one batch: onnxruntime {ort_s * 1e3:.0f} ms, transformers {hf_s * 1e3:.0f} ms")
        ok &= diff < 1e-4 and agree == len(got_c)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
