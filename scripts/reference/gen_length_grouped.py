"""Reference fixture for `group_by_length`: `transformers.trainer_pt_utils.get_length_grouped_indices` with the
random permutation fixed (torch.randperm replaced by a given permutation, since our generator is our own), so
the deterministic part (megabatch size, stable longest-first sort, longest-first swap) is compared exactly.
Writes crates/data/tests/fixtures/length_grouped.json. Run with the torch venv:

    /work/main/.venv-torch/bin/python scripts/reference/gen_length_grouped.py
"""
import importlib.metadata as md
import json
import os
import random

import torch
from transformers import trainer_pt_utils

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "data", "tests", "fixtures", "length_grouped.json")


def case(rng, n, batch_size, max_len, cid):
    lengths = [rng.randint(1, max_len) for _ in range(n)]
    perm = list(range(n))
    rng.shuffle(perm)
    real = torch.randperm
    torch.randperm = lambda k, generator=None: torch.tensor(perm, dtype=torch.long)
    try:
        out = trainer_pt_utils.get_length_grouped_indices(lengths, batch_size)
    finally:
        torch.randperm = real
    return {"id": cid, "lengths": lengths, "batch_size": batch_size, "permutation": perm, "expected": out}


def main():
    rng = random.Random(1234)
    cases = []
    # Tiny (megabatch of one batch), ties (few distinct lengths), the 50-batch cap, ragged last megabatch.
    for k, (n, bs, max_len) in enumerate(
        [(1, 1, 5), (3, 4, 9), (10, 2, 10), (17, 3, 4), (64, 4, 2), (100, 8, 50), (333, 5, 128), (1000, 4, 120),
         (2500, 8, 512), (4001, 16, 64), (50, 1, 3), (257, 32, 300)]
    ):
        cases.append(case(rng, n, bs, max_len, f"c{k}-n{n}-bs{bs}"))
    doc = {
        "generator": "scripts/reference/gen_length_grouped.py",
        "reference": "transformers.trainer_pt_utils.get_length_grouped_indices (torch.randperm fixed)",
        "versions": {p: md.version(p) for p in ("transformers", "torch")},
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
