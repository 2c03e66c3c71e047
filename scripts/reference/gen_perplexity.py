"""Reference fixtures for perplexity (crates/metrics/src/perplexity.rs), written independently in float64.

No Python library has this exact API, so the reference is plain math:
  perplexity(log_probs | probs | log2_probs, mask=None)
      per sequence: exp(-sum(ln p) / n) over tokens with mask 1 (probs: ln p = log(p), log2: ln p = log2 p * ln 2);
      corpus: exp(-sum over all counted tokens / total count); mean_perplexity: mean of the per-sequence values.
      A flat list is one sequence. Zero counted tokens -> NaN (0/0). p = 0 -> inf.
      Invalid counted values (p outside [0, 1], log-prob > 0, NaN), mask entries not 0/1, shape mismatch,
      or not exactly one of the three inputs -> ValueError. Masked-out values are never read.
  perplexity_from_logits(logits[b][t][v], labels[b][t], ignore_index=-100)
      the causal-LM loss as torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
      ignore_index=ignore_index) computes it (mean over non-ignored targets), using a max-subtracted
      log-softmax in float64 with numpy; exp of it. Per sequence the same over that sequence's targets.
      A target outside 0..V (not ignored) -> IndexError (torch: "Target k is out of bounds.").

Writes crates/metrics/tests/fixtures/perplexity.json.
"""
import math
import random

import numpy as np

from refcommon import Cases


def _nll(kind, x):
    if kind == "probs":
        if not (0.0 <= x <= 1.0):
            raise ValueError(f"probs: invalid value {x}")
        return math.inf if x == 0.0 else -math.log(x)
    if not (x <= 0.0):
        raise ValueError(f"{kind}: invalid value {x}")
    return -x if kind == "log_probs" else -x * math.log(2.0)


def _ratio_exp(nll, n):
    if n == 0:
        return math.nan
    try:
        return math.exp(nll / n)
    except OverflowError:  # exp overflows to inf in float64 (as torch.exp does)
        return math.inf


def perplexity(**kw):
    kinds = [k for k in ("log_probs", "probs", "log2_probs") if kw.get(k) is not None]
    if len(kinds) != 1:
        raise ValueError("pass exactly one of log_probs, probs, log2_probs")
    kind = kinds[0]
    values = kw[kind]
    mask = kw.get("mask")
    if values and all(not isinstance(r, list) for r in values):
        values = [values]
    if mask is not None and mask and all(not isinstance(r, list) for r in mask):
        mask = [mask]
    if mask is not None and len(mask) != len(values):
        raise ValueError("mask and values differ in length")
    total_nll, total_n, per = 0.0, 0, []
    for b, row in enumerate(values):
        m = mask[b] if mask is not None else [1] * len(row)
        if len(m) != len(row):
            raise ValueError("mask and sequence differ in length")
        nll, n = 0.0, 0
        for x, keep in zip(row, m):
            if keep not in (0, 1):
                raise ValueError("mask entries must be 0 or 1")
            if keep:
                nll += _nll(kind, float(x))
                n += 1
        total_nll += nll
        total_n += n
        per.append(_ratio_exp(nll, n))
    mean = math.nan if not per else sum(per) / len(per)
    return {"perplexity": _ratio_exp(total_nll, total_n), "perplexities": per, "mean_perplexity": mean}


def _token_nll(row, k):
    # log_softmax with the max subtracted, as torch does, in float64
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return -(row[k] - m - np.log(np.exp(row - m).sum()))


def perplexity_from_logits(logits, labels, ignore_index=-100):
    if len(logits) != len(labels):
        raise ValueError("logits and labels differ in batch size")
    total_nll, total_n, per = 0.0, 0, []
    for seq_logits, seq_labels in zip(logits, labels):
        if len(seq_logits) != len(seq_labels):
            raise ValueError("logits and labels differ in length")
        nll, n = 0.0, 0
        for t in range(len(seq_labels) - 1):
            target = seq_labels[t + 1]
            if target == ignore_index:
                continue
            if not (0 <= target < len(seq_logits[t])):
                raise IndexError(f"Target {target} is out of bounds.")
            nll += float(_token_nll(seq_logits[t], target))
            n += 1
        total_nll += nll
        total_n += n
        per.append(_ratio_exp(nll, n))
    mean = math.nan if not per else sum(per) / len(per)
    return {"perplexity": _ratio_exp(total_nll, total_n), "perplexities": per, "mean_perplexity": mean}


def rand_probs(rng, n):
    return [rng.uniform(1e-6, 1.0) for _ in range(n)]


def main():
    rng = random.Random(1234)
    c = Cases("perplexity", "scripts/reference/gen_perplexity.py", ["numpy"])
    P, L = "perplexity", "perplexity_from_logits"

    c.add("uniform_quarter", P, perplexity, dict(probs=[[0.25, 0.25, 0.25]]))
    c.add("flat_list", P, perplexity, dict(probs=[0.5, 0.25]))
    c.add("certain", P, perplexity, dict(probs=[[1.0, 1.0]]))
    c.add("zero_prob", P, perplexity, dict(probs=[[0.5, 0.0], [0.5, 0.5]]))
    c.add("zero_prob_masked", P, perplexity, dict(probs=[[0.5, 0.0]], mask=[[1, 0]]))
    c.add("neg_inf_logprob", P, perplexity, dict(log_probs=[[-1.0, "-Infinity"]]))
    c.add("log2_half", P, perplexity, dict(log2_probs=[[-1.0, -1.0, -1.0]]))
    c.add("empty_batch", P, perplexity, dict(log_probs=[]))
    c.add("empty_sequence", P, perplexity, dict(log_probs=[[], [-0.5]]))
    c.add("all_masked", P, perplexity, dict(log_probs=[[-0.1, -0.2]], mask=[[0, 0]]))
    c.add("one_row_all_masked", P, perplexity, dict(log_probs=[[-0.1, -0.2], [-1.0]], mask=[[0, 0], [1]]))
    c.add("bool_mask", P, perplexity, dict(log_probs=[[-0.1, -0.2, 5.0]], mask=[[True, True, False]]))
    c.add("padding_garbage", P, perplexity, dict(probs=[[0.5, 7.0, "NaN"]], mask=[[1, 0, 0]]))
    c.add("prob_above_one", P, perplexity, dict(probs=[[1.5]]))
    c.add("negative_prob", P, perplexity, dict(probs=[[-0.1]]))
    c.add("positive_logprob", P, perplexity, dict(log_probs=[[0.1]]))
    c.add("positive_log2prob", P, perplexity, dict(log2_probs=[[0.5]]))
    c.add("nan_logprob", P, perplexity, dict(log_probs=[["NaN"]]))
    c.add("bad_mask_value", P, perplexity, dict(log_probs=[[-0.1]], mask=[[2]]))
    c.add("mask_row_length", P, perplexity, dict(log_probs=[[-0.1, -0.2]], mask=[[1]]))
    c.add("mask_batch_length", P, perplexity, dict(log_probs=[[-0.1]], mask=[[1], [1]]))
    c.add("no_input", P, perplexity, dict())
    c.add("two_inputs", P, perplexity, dict(log_probs=[[-0.1]], probs=[[0.5]]))
    c.add("tiny_probs", P, perplexity, dict(probs=[[1e-300, 1e-200]]))
    for i in range(40):
        b = rng.randint(1, 5)
        lens = [rng.randint(0, 12) for _ in range(b)]
        width = max(lens + [1])
        probs = [rand_probs(rng, width) for _ in range(b)]
        mask = [[1] * n + [0] * (width - n) for n in lens]
        kind = rng.choice(["log_probs", "probs", "log2_probs"])
        vals = {"probs": probs, "log_probs": [[math.log(p) for p in r] for r in probs],
                "log2_probs": [[math.log2(p) for p in r] for r in probs]}[kind]
        kw = {kind: vals}
        if rng.random() < 0.8:
            kw["mask"] = mask
        c.add(f"random_{i}", P, perplexity, kw)

    def rand_logits(b, t, v, scale=5.0):
        return [[[rng.gauss(0.0, scale) for _ in range(v)] for _ in range(t)] for _ in range(b)]

    c.add("logits_simple", L, perplexity_from_logits,
          dict(logits=[[[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]]], labels=[[0, 1, 0]]))
    c.add("logits_all_ignored", L, perplexity_from_logits,
          dict(logits=[[[0.0, 1.0], [1.0, 2.0]]], labels=[[5, -100]]))
    c.add("logits_single_position", L, perplexity_from_logits, dict(logits=[[[0.0, 1.0]]], labels=[[1]]))
    c.add("logits_empty_batch", L, perplexity_from_logits, dict(logits=[], labels=[]))
    c.add("logits_out_of_bounds", L, perplexity_from_logits, dict(logits=[[[0.0, 1.0], [0.0, 1.0]]], labels=[[0, 2]]))
    c.add("logits_negative_label", L, perplexity_from_logits, dict(logits=[[[0.0, 1.0], [0.0, 1.0]]], labels=[[0, -1]]))
    c.add("logits_first_label_unused", L, perplexity_from_logits,
          dict(logits=[[[0.0, 1.0], [0.0, 1.0]]], labels=[[99, 1]]))
    c.add("logits_custom_ignore", L, perplexity_from_logits,
          dict(logits=[[[0.0, 1.0], [2.0, 1.0], [0.5, 0.5]]], labels=[[0, 1, 0]], ignore_index=0))
    c.add("logits_large", L, perplexity_from_logits,
          dict(logits=[[[1000.0, -1000.0, 0.0], [700.0, 710.0, 720.0]]], labels=[[0, 1]]))
    c.add("logits_large_finite", L, perplexity_from_logits,
          dict(logits=[[[1000.0, -1000.0, 0.0], [700.0, 710.0, 720.0], [1.0, 2.0, 3.0]]], labels=[[0, 1, 0]]))
    c.add("logits_length_mismatch", L, perplexity_from_logits, dict(logits=[[[0.0], [0.0]]], labels=[[0]]))
    c.add("logits_batch_mismatch", L, perplexity_from_logits, dict(logits=[[[0.0]]], labels=[]))
    for i in range(30):
        b, t, v = rng.randint(1, 4), rng.randint(1, 9), rng.randint(1, 12)
        labels = [[rng.randrange(v) if rng.random() > 0.25 else -100 for _ in range(t)] for _ in range(b)]
        c.add(f"logits_random_{i}", L, perplexity_from_logits,
              dict(logits=rand_logits(b, t, v, scale=rng.choice([0.1, 2.0, 30.0])), labels=labels))
    c.write()


if __name__ == "__main__":
    main()
