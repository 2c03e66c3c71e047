"""Writes crates/data/tests/fixtures/near_dup.json: MinHash signatures, LSH parameters and candidate pairs from
the `datasketch` package, for crates/data/tests/near_dup.rs.

Run with the data reference venv (scripts/reference/setup.sh data; datasketch 2.0.0, numpy 2.3.5, scipy):
    .venv-data/bin/python scripts/reference/gen_near_dup.py
Needs assets/data/spam/spam_assassin.jsonl (scripts/fetch-datasets.sh): the first 300 e-mails, each cut to its
first 600 characters (the SpamAssassin corpus has many near-identical spam and list mails), plus 20 edited copies
(a few words changed, dropped or added) so that the fixture has pairs on both sides of the threshold.

Shingling is written out here as crates/data/src/near_dup.rs documents it (datasketch hashes whatever bytes it is
given): words = text.lower().split(); word n-grams joined by one space (a text with fewer than n words is one
shingle, an empty one none); character n-grams of " ".join(words). Each shingle is hashed as its UTF-8 bytes.
"""

import json
import random
from pathlib import Path

import datasketch
import numpy as np
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "assets" / "data" / "spam" / "spam_assassin.jsonl"
OUT = ROOT / "crates" / "data" / "tests" / "fixtures" / "near_dup.json"


def shingles(text, kind, n):
    words = text.lower().split()
    if kind == "words":
        if not words:
            return []
        if len(words) < n:
            return [" ".join(words)]
        return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    joined = " ".join(words)
    if not joined:
        return []
    if len(joined) < n:
        return [joined]
    return [joined[i : i + n] for i in range(len(joined) - n + 1)]


def texts():
    out = []
    with SRC.open(encoding="utf-8") as f:
        for line in f:
            if len(out) == 300:
                break
            out.append(json.loads(line)["text"][:600])
    rng = random.Random(7)
    for k in range(20):
        words = out[rng.randrange(len(out))].split()
        if len(words) < 10:
            continue
        for _ in range(1 + k % 6):
            i = rng.randrange(len(words))
            op = rng.randrange(3)
            if op == 0:
                words[i] = "edited"
            elif op == 1 and len(words) > 2:
                del words[i]
            else:
                words.insert(i, "inserted")
        out.append(" ".join(words))
    return out


def minhash(text, kind, n, num_perm, seed, scheme):
    m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
    sh = shingles(text, kind, n)
    if not sh:
        return None
    m.update_batch([s.encode("utf-8") for s in sh])
    return m


def main():
    docs = texts()
    perms = []
    for scheme, seed, num_perm in [("affine32", 1, 128), ("affine32", 42, 64), ("legacy", 1, 128), ("legacy", 7, 32)]:
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
        perms.append({"scheme": scheme, "seed": seed, "num_perm": num_perm, "a": [int(x) for x in a], "b": [int(x) for x in b]})
    params = []
    for num_perm in (16, 64, 128, 256):
        for t in (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
            b, r = _optimal_param(t, num_perm, 0.5, 0.5)
            params.append({"threshold": t, "num_perm": num_perm, "b": b, "r": r})
    configs = []
    for kind, n, threshold, num_perm, seed, scheme in [
        ("words", 5, 0.8, 128, 1, "affine32"),
        ("words", 3, 0.5, 64, 3, "affine32"),
        ("chars", 5, 0.7, 128, 1, "legacy"),
    ]:
        sigs = [minhash(t, kind, n, num_perm, seed, scheme) for t in docs]
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        for i, m in enumerate(sigs):
            if m is not None:
                lsh.insert(i, m)
        pairs = set()
        for i, m in enumerate(sigs):
            if m is None:
                continue
            for j in lsh.query(m):
                if j != i:
                    pairs.add((min(i, j), max(i, j)))
        pairs = sorted(pairs)
        # Across files: the first 200 texts indexed, the rest queried.
        half = MinHashLSH(threshold=threshold, num_perm=num_perm)
        for i, m in enumerate(sigs[:200]):
            if m is not None:
                half.insert(i, m)
        across = {}
        for i, m in enumerate(sigs[200:], start=200):
            if m is not None:
                hits = sorted(half.query(m))
                if hits:
                    across[str(i)] = hits
        configs.append({
            "shingles": kind,
            "n": n,
            "threshold": threshold,
            "num_perm": num_perm,
            "seed": seed,
            "scheme": scheme,
            "b": lsh.b,
            "r": lsh.r,
            "signatures": {str(i): [int(x) for x in sigs[i].hashvalues] for i in (0, 1, 2, 300) if sigs[i] is not None},
            "jaccard": [[i, j, float(sigs[i].jaccard(sigs[j]))] for i, j in pairs],
            "candidate_pairs": [list(p) for p in pairs],
            "across": across,
        })
        print(f"{kind}-{n} t={threshold} {scheme}: b={lsh.b} r={lsh.r}, {len(pairs)} candidate pairs, {len(across)} across")
    out = {
        "generator": "scripts/reference/gen_near_dup.py",
        "datasketch": datasketch.__version__ if hasattr(datasketch, "__version__") else "2.0.0",
        "numpy": np.__version__,
        "texts": docs,
        "permutations": perms,
        "optimal_params": params,
        "configs": configs,
    }
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(OUT)
    print(f"{OUT}: {len(docs)} texts")


if __name__ == "__main__":
    main()
