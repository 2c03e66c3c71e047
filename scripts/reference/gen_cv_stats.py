"""Reference fixture for `finetune cv`'s summary: numpy.mean and numpy.std(ddof=1) (what pandas' .std() gives) of
seeded vectors of 2..200 values (fold counts and beyond, across numpy's pairwise-summation block sizes), written
to crates/train/tests/fixtures/cv_stats.json. Run with the torch venv:

    /work/main/.venv-torch/bin/python scripts/reference/gen_cv_stats.py
"""
import importlib.metadata as md
import json
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "crates", "train", "tests", "fixtures", "cv_stats.json")

rng = np.random.default_rng(20261123)
cases = []
for n in [2, 3, 5, 7, 8, 9, 10, 15, 16, 17, 31, 64, 127, 128, 129, 200]:
    # Metric-like values in [0, 1] and losses of a wider range.
    for scale in [1.0, 7.5]:
        x = rng.random(n) * scale
        cases.append({"x": x.tolist(), "mean": float(np.mean(x)), "std": float(np.std(x, ddof=1))})
x = np.array([0.9, 0.9, 0.9, 0.9, 0.9])
cases.append({"x": x.tolist(), "mean": float(np.mean(x)), "std": float(np.std(x, ddof=1))})

with open(OUT, "w") as f:
    json.dump({"numpy": md.version("numpy"), "cases": cases}, f, indent=1)
    f.write("\n")
print(f"wrote {len(cases)} cases to {OUT}")
