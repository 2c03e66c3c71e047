"""Mean token count of a CSV text column and the mean padded length of random batches (each padded to its
longest row, rounded up to a multiple of 8, as both sides of scripts/bench/trainer.sh do): the sequence length
at which `bench_step --seq` matches an end-to-end run's batches.

.venv-torch/bin/python scripts/bench/padded_length.py TOKENIZER_JSON CSV [--column text] [--batch 32]
    [--max-length 128] [--seeds 3]
"""
import argparse
import csv
import random
import statistics

from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("tokenizer")
p.add_argument("csv")
p.add_argument("--column", default="text")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--max-length", type=int, default=128)
p.add_argument("--seeds", type=int, default=3)
a = p.parse_args()
tok = Tokenizer.from_file(a.tokenizer)
tok.no_padding()
tok.no_truncation()
with open(a.csv, newline="") as f:
    lens = [min(len(tok.encode(r[a.column]).ids), a.max_length) for r in csv.DictReader(f)]
print(f"rows {len(lens)}, mean tokens {statistics.mean(lens):.1f} (special tokens included, cut at {a.max_length})")
for seed in range(a.seeds):
    order = list(range(len(lens)))
    random.Random(seed).shuffle(order)
    pads = [(max(lens[j] for j in order[i : i + a.batch]) + 7) // 8 * 8 for i in range(0, len(order), a.batch)]
    print(f"seed {seed}: mean padded batch length {statistics.mean(pads):.1f} over {len(pads)} batches of {a.batch}")
