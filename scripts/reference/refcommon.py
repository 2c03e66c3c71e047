"""Shared helpers for the reference fixture generators.

Every generator builds cases as (metric name, keyword args) and records what the pinned reference returns,
or the exception class it raises. The JSON convention matches crates/metrics/src/json.rs: NaN and +/-inf
are written as the strings "NaN", "Infinity", "-Infinity"; numpy scalars and arrays become plain JSON.
"""
import json
import math
import os
import sys
import importlib.metadata as md

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "metrics", "tests", "fixtures")


def encode(x):
    if isinstance(x, dict):
        return {str(k): encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [encode(v) for v in x]
    if isinstance(x, np.ndarray):
        return encode(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return x
    return x


class Cases:
    """Collects fixture cases; `add` calls the reference and records its result or exception."""

    def __init__(self, family, generator, packages):
        self.family = family
        self.generator = generator
        self.packages = packages
        self.cases = []
        self.ids = set()

    def add(self, case_id, metric, fn, args, post=lambda r: r):
        assert case_id not in self.ids, case_id
        self.ids.add(case_id)
        case = {"id": case_id, "metric": metric, "args": encode(args)}
        try:
            case["result"] = encode(post(fn(**args)))
        except Exception as e:  # the reference's error class is part of the contract
            case["error"] = {"kind": type(e).__name__, "message": str(e)}
        self.cases.append(case)

    def write(self):
        out = {
            "generator": self.generator,
            "python": sys.version.split()[0],
            "versions": {p: md.version(p) for p in self.packages},
            "cases": self.cases,
        }
        path = os.path.join(FIXTURES, f"{self.family}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
        print(f"{path}: {len(self.cases)} cases")
