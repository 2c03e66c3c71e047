"""The reference side of the classifier load test: the same texts through `transformers.pipeline`
("text-classification", batched) on the same machine; prints texts/s and the process's peak RSS.

  python scripts/bench/pipeline_classify.py MODEL_DIR texts.csv N BATCH_SIZE [--bf16]
(--bf16: under torch.autocast("cpu", torch.bfloat16), PyTorch's fastest mode on CPUs with AVX512-BF16 or AMX.)
"""
import contextlib
import csv
import json
import resource
import sys
import time

import torch
from transformers import pipeline

model, path, n, bs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(path, newline="") as f:
    texts = [row["text"] for row in csv.DictReader(f)]
texts = (texts * (n // len(texts) + 1))[:n]
torch.set_num_threads(torch.get_num_threads())
clf = pipeline("text-classification", model=model, device="cpu", truncation=True, max_length=128)
bf16 = "--bf16" in sys.argv[5:]
ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
with ctx:
    clf(texts[:bs], batch_size=bs)  # warm-up
    start = time.perf_counter()
    out = clf(texts, batch_size=bs)
wall = time.perf_counter() - start
print(json.dumps({"texts": len(out), "wall_s": round(wall, 3), "throughput": round(len(out) / wall, 2),
                  "unit": "texts/s", "batch_size": bs, "bf16_autocast": bf16, "threads": torch.get_num_threads(),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "torch": torch.__version__}))
