"""datasketch's side of scripts/bench/near_dup.sh: MinHash (word 5-grams, num_perm 128, seed 1, affine32) and
MinHashLSH(threshold 0.8) over the texts of a JSONL file, candidate pairs by querying every text, pairs whose
estimated Jaccard reaches the threshold. Prints `key value` lines: records, candidate_pairs, similar_pairs,
seconds (wall time of hashing + indexing + querying, reading excluded)."""

import json
import sys
import time

from datasketch import MinHash, MinHashLSH

path = sys.argv[1]
threshold, num_perm, n = 0.8, 128, 5
texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8") if l.strip()]
start = time.perf_counter()
perm = MinHash(num_perm=num_perm, seed=1).permutations
sigs = []
for t in texts:
    words = t.lower().split()
    sh = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)] if len(words) >= n else ([" ".join(words)] if words else [])
    if not sh:
        sigs.append(None)
        continue
    m = MinHash(num_perm=num_perm, seed=1, permutations=perm, scheme="affine32")
    m.update_batch([s.encode("utf-8") for s in sh])
    sigs.append(m)
lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
for i, m in enumerate(sigs):
    if m is not None:
        lsh.insert(i, m)
pairs = set()
for i, m in enumerate(sigs):
    if m is not None:
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
similar = sum(1 for i, j in pairs if sigs[i].jaccard(sigs[j]) >= threshold)
secs = time.perf_counter() - start
print(f"records {len(texts)}")
print(f"candidate_pairs {len(pairs)}")
print(f"similar_pairs {similar}")
print(f"seconds {secs:.3f}")
