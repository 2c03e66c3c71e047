"""Reference fixtures for the ranking metrics (scikit-learn 1.9.1): roc_curve, roc_auc_score,
precision_recall_curve, average_precision_score and auc.

Run with the pinned reference venv: `.venv-ref/bin/python scripts/reference/gen_ranking.py`.
"""
import warnings

import numpy as np
import sklearn.metrics as skm
from sklearn.utils._param_validation import InvalidParameterError

from refcommon import Cases

warnings.simplefilter("ignore")

C = Cases("ranking", "scripts/reference/gen_ranking.py", ["scikit-learn", "numpy"])
rng = np.random.default_rng(20261123)

ROC = skm.roc_curve
PR = skm.precision_recall_curve


def roc_post(r):
    fpr, tpr, thr = r
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr}


def pr_post(r):
    p, rc, thr = r
    return {"precision": p, "recall": rc, "thresholds": thr}


def add(cid, name, **kw):
    fn = getattr(skm, name)
    post = {"roc_curve": roc_post, "precision_recall_curve": pr_post}.get(name, lambda r: r)
    # numpy arrays, as callers pass them (some code paths read `.shape`)
    kw = {k: np.asarray(v) if isinstance(v, list) and k in ("y_true", "y_score") else v for k, v in kw.items()}
    C.add(cid, name, fn, kw, post=post)


BIN = ["roc_curve", "precision_recall_curve", "roc_auc_score", "average_precision_score"]


def all_binary(cid, y, s, **kw):
    """The same binary input through every binary metric (with curve variants)."""
    for name in BIN:
        extra = dict(kw)
        if name in ("roc_auc_score",):
            extra.pop("pos_label", None)
        add(f"{cid}/{name}", name, y_true=y, y_score=s, **extra)
    for name in ("roc_curve", "precision_recall_curve"):
        flip = name == "precision_recall_curve"  # defaults differ: roc drops, PR keeps
        add(f"{cid}/{name}/di={flip}", name, y_true=y, y_score=s, drop_intermediate=flip, **kw)


# --- hand-written binary cases -------------------------------------------------------------------------------
hand = {
    "doc": ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
    "perfect": ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),
    "inverted": ([1, 1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),
    "all_equal": ([0, 1, 0, 1, 1], [0.5] * 5),
    "ties": ([0, 1, 1, 0, 1, 0, 0, 1], [0.3, 0.3, 0.7, 0.7, 0.5, 0.5, 0.3, 0.9]),
    "one_pos": ([0, 0, 0, 1], [0.2, 0.9, 0.1, 0.5]),
    "one_neg": ([1, 1, 0, 1], [0.2, 0.9, 0.1, 0.5]),
    "all_pos": ([1, 1, 1], [0.2, 0.5, 0.1]),
    "all_neg": ([0, 0, 0], [0.2, 0.5, 0.1]),
    "single_pos": ([1], [0.3]),
    "single_neg": ([0], [0.3]),
    "two": ([0, 1], [0.4, 0.6]),
    "two_tied": ([0, 1], [0.5, 0.5]),
    "two_inv": ([1, 0], [0.4, 0.6]),
    "three": ([1, 0, 1], [0.1, 0.5, 0.9]),
    "minus_one": ([-1, 1, -1, 1, 1], [-2.0, 1.5, 0.0, 3.0, -0.5]),
    "bools": ([False, True, True, False], [0.1, 0.8, 0.3, 0.6]),
    "neg_scores": ([0, 1, 0, 1, 0, 1], [-3.0, -1.0, -2.0, -1.0, 0.0, 5.0]),
    "neg_zero": ([0, 1, 0, 1], [0.0, -0.0, 0.5, -0.0]),
    "float_labels": ([0.0, 1.0, 1.0, 0.0], [0.2, 0.4, 0.3, 0.1]),
    "large_scores": ([0, 1, 0, 1, 1], [1e300, -1e300, 1e-300, 5e-324, 1e10]),
    "empty": ([], []),
    "nan_score": ([0, 1, 0], [0.1, float("nan"), 0.3]),
    "inf_score": ([0, 1, 0], [0.1, float("inf"), 0.3]),
    "length_mismatch": ([0, 1, 0], [0.1, 0.2]),
    "continuous_true": ([0.5, 1.0, 0.0], [0.1, 0.2, 0.3]),
    "multiclass_true": ([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4]),
    "labels_1_2": ([1, 2, 2, 1], [0.1, 0.4, 0.35, 0.8]),
    "labels_0_2": ([0, 2, 2, 0], [0.1, 0.4, 0.35, 0.8]),
}
for k, (y, s) in hand.items():
    all_binary(f"bin/{k}", y, s)

# pos_label rules
for k, (y, s, pl) in {
    "pl2": ([1, 1, 2, 2], [0.1, 0.4, 0.35, 0.8], 2),
    "pl1of12": ([1, 1, 2, 2], [0.1, 0.4, 0.35, 0.8], 1),
    "pl0": ([0, 0, 1, 1, 0], [0.1, 0.4, 0.35, 0.8, 0.5], 0),
    "pl_absent": ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 3),
    "pl_absent_oneclass": ([0, 0, 0], [0.1, 0.4, 0.35], 1),
    "pl_minus1": ([-1, 1, 1, -1], [0.3, 0.2, 0.9, 0.5], -1),
    "pl_multiclass": ([0, 1, 2, 1, 2, 0], [0.1, 0.5, 0.9, 0.4, 0.7, 0.2], 2),
    "pl_float": ([0, 1, 1, 0], [0.3, 0.2, 0.9, 0.5], 1.0),
    "pl_bool": ([False, True, True, False], [0.3, 0.2, 0.9, 0.5], True),
}.items():
    all_binary(f"pos/{k}", y, s, pos_label=pl)

# string labels
strs = [
    ("ab", ["a", "b", "b", "a", "b"], [0.1, 0.8, 0.6, 0.4, 0.3], "b"),
    ("ab_a", ["a", "b", "b", "a", "b"], [0.1, 0.8, 0.6, 0.4, 0.3], "a"),
    ("spam", ["spam", "ham", "spam", "ham"], [0.9, 0.2, 0.4, 0.5], "spam"),
    ("unicode", ["ñ", "日本", "日本", "ñ"], [0.9, 0.2, 0.4, 0.5], "日本"),
    ("empty_str", ["", "x", "", "x"], [0.9, 0.2, 0.4, 0.5], "x"),
    ("absent", ["a", "b", "a"], [0.2, 0.3, 0.1], "c"),
    ("one_class", ["a", "a", "a"], [0.2, 0.3, 0.1], "a"),
    ("num_pl", ["a", "b", "a"], [0.2, 0.3, 0.1], 1),
]
for k, y, s, pl in strs:
    all_binary(f"str/{k}", y, s, pos_label=pl)
    add(f"str/{k}/roc_curve/nopl", "roc_curve", y_true=y, y_score=s)
    add(f"str/{k}/roc_auc_score/plain", "roc_auc_score", y_true=y, y_score=s)
add("str/num_true_str_pl/roc_curve", "roc_curve", y_true=[0, 1, 1], y_score=[0.1, 0.5, 0.3], pos_label="1")

# sample weights
for k, (y, s, w) in {
    "w_basic": ([0, 1, 1, 0, 1], [0.1, 0.9, 0.4, 0.6, 0.3], [1.0, 2.0, 0.5, 3.0, 1.5]),
    "w_zeros": ([0, 1, 1, 0, 1, 0], [0.1, 0.9, 0.4, 0.6, 0.3, 0.95], [1.0, 0.0, 2.0, 0.0, 1.0, 0.5]),
    "w_zero_all_pos": ([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], [1.0, 0.0, 0.0, 2.0]),
    "w_all_zero": ([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], [0.0, 0.0, 0.0, 0.0]),
    "w_ties": ([0, 1, 0, 1, 1, 0], [0.5, 0.5, 0.5, 0.2, 0.2, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    "w_int": ([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], [1, 2, 3, 4]),
    "w_bad_len": ([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], [1.0, 2.0]),
    "w_nan": ([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], [1.0, float("nan"), 1.0, 1.0]),
    "w_neg": ([0, 1, 1, 0, 1], [0.1, 0.9, 0.4, 0.6, 0.2], [1.0, -0.5, 2.0, 1.0, 1.0]),
    "w_tiny": ([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], [1e-300, 1e-300, 2e-300, 1e-300]),
}.items():
    all_binary(f"sw/{k}", y, s, sample_weight=w)

# max_fpr
for k, (y, s) in {"doc": hand["doc"], "ties": hand["ties"], "perfect": hand["perfect"],
                  "inverted": hand["inverted"], "all_equal": hand["all_equal"]}.items():
    for m in [0.01, 0.1, 0.25, 0.5, 0.75, 0.99, 1.0, 1, 0.0, -0.1, 1.5, None]:
        add(f"maxfpr/{k}/{m}", "roc_auc_score", y_true=y, y_score=s, max_fpr=m)
for m in [0.05, 0.3, 0.8]:
    y = rng.integers(0, 2, 200)
    s = rng.random(200).round(2)
    w = rng.random(200).round(3)
    add(f"maxfpr/rand/{m}", "roc_auc_score", y_true=y, y_score=s, max_fpr=m)
    add(f"maxfpr/rand_w/{m}", "roc_auc_score", y_true=y, y_score=s, max_fpr=m, sample_weight=w)
add("maxfpr/oneclass", "roc_auc_score", y_true=[1, 1, 1], y_score=[0.1, 0.2, 0.3], max_fpr=0.5)

# auc
for k, (x, y) in {
    "inc": ([0, 0.5, 1], [0, 0.8, 1]),
    "dec": ([1, 0.5, 0], [1, 0.8, 0]),
    "flat_then_inc": ([0, 0, 0.5, 1, 1], [0, 0.5, 0.6, 0.9, 1]),
    "const_x": ([2, 2, 2], [1, 5, 3]),
    "non_monotonic": ([0, 1, 0.5], [0, 1, 1]),
    "one_point": ([0.5], [0.5]),
    "empty": ([], []),
    "two": ([0, 2], [3, 5]),
    "neg_y": ([0, 1, 2, 3], [-1, 2, -3, 4]),
    "mismatch": ([0, 1, 2], [0, 1]),
    "with_nan": ([0, 1, 2], [0, float("nan"), 1]),
    "nan_x": ([0, float("nan"), 2], [0, 1, 1]),
    "big": (list(np.cumsum(rng.random(500))), list(rng.random(500))),
}.items():
    add(f"auc/{k}", "auc", x=x, y=y)

# --- multilabel indicator --------------------------------------------------------------------------------------
def ml_cases(cid, y, s, w=None):
    for name in ("roc_auc_score", "average_precision_score"):
        for avg in ["micro", "macro", "weighted", "samples", None, "binary", "bogus"]:
            kw = dict(y_true=y, y_score=s, average=avg)
            if w is not None:
                kw["sample_weight"] = w
            add(f"{cid}/{name}/{avg}", name, **kw)


ml_hand = {
    "basic": ([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]],
              [[0.9, 0.1, 0.8], [0.2, 0.7, 0.6], [0.6, 0.4, 0.3], [0.1, 0.3, 0.9]]),
    "col_all_zero": ([[1, 0], [0, 0], [1, 0], [0, 0]], [[0.9, 0.1], [0.2, 0.7], [0.6, 0.4], [0.1, 0.3]]),
    "col_all_one": ([[1, 1], [0, 1], [1, 1], [0, 1]], [[0.9, 0.1], [0.2, 0.7], [0.6, 0.4], [0.1, 0.3]]),
    "ties": ([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]],
             [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.2, 0.5, 0.5], [0.2, 0.2, 0.5], [0.5, 0.2, 0.2]]),
    "all_zero": ([[0, 0], [0, 0], [0, 0]], [[0.9, 0.1], [0.2, 0.7], [0.6, 0.4]]),
    "shape_mismatch": ([[1, 0, 1], [0, 1, 1]], [[0.9, 0.1], [0.2, 0.7]]),
}
for k, (y, s) in ml_hand.items():
    ml_cases(f"ml/{k}", y, s)
ml_cases("ml/basic_w", ml_hand["basic"][0], ml_hand["basic"][1], [1.0, 0.0, 2.5, 0.5])
ml_cases("ml/ties_w", ml_hand["ties"][0], ml_hand["ties"][1], [1.0, 2.0, 0.0, 0.5, 3.0])
add("ml/ap_pos_label2", "average_precision_score", y_true=ml_hand["basic"][0], y_score=ml_hand["basic"][1],
    pos_label=0)
add("ml/roc_curve_2d", "roc_curve", y_true=ml_hand["basic"][0], y_score=ml_hand["basic"][1])
add("ml/max_fpr", "roc_auc_score", y_true=ml_hand["basic"][0], y_score=ml_hand["basic"][1], max_fpr=0.5)
for i, (n, k) in enumerate([(10, 2), (30, 3), (50, 4), (80, 5), (120, 3)]):
    y = (rng.random((n, k)) < 0.4).astype(int)
    y[0] = 1  # every label present at least once
    y[1] = 0
    s = rng.random((n, k)).round(2 if i % 2 else 4)
    w = rng.random(n).round(3)
    ml_cases(f"ml/rand{i}", y, s)
    ml_cases(f"ml/rand{i}_w", y, s, w)

# --- multiclass -------------------------------------------------------------------------------------------------
def probs(n, k, decimals=None):
    p = rng.random((n, k)) + 0.05
    p = p / p.sum(axis=1, keepdims=True)
    if decimals is not None:
        p = p.round(decimals)
        p[:, -1] = 1.0 - p[:, :-1].sum(axis=1)
    return p


def mc_cases(cid, y, s, w=None, labels=None):
    for mc in ["ovr", "ovo"]:
        for avg in ["macro", "weighted", "micro", None, "samples"]:
            if mc == "ovo" and avg is None:
                continue  # NotImplementedError in the reference (no counterpart error class)
            kw = dict(y_true=y, y_score=s, multi_class=mc, average=avg)
            if w is not None:
                kw["sample_weight"] = w
            if labels is not None:
                kw["labels"] = labels
            add(f"{cid}/{mc}/{avg}", "roc_auc_score", **kw)


mc_y = [0, 1, 2, 2, 1, 0, 2]
mc_s = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4],
        [0.3, 0.4, 0.3], [0.4, 0.4, 0.2], [0.2, 0.6, 0.2]]
mc_cases("mc/basic", mc_y, mc_s)
mc_cases("mc/basic_w", mc_y, mc_s, w=[1.0, 2.0, 0.5, 0.0, 1.0, 3.0, 1.0])
mc_cases("mc/str", ["cat", "dog", "eel", "eel", "dog", "cat", "eel"], mc_s)
mc_cases("mc/str_labels", ["cat", "dog", "eel", "eel", "dog", "cat", "eel"], mc_s, labels=["cat", "dog", "eel"])
mc_cases("mc/labels", mc_y, mc_s, labels=[0, 1, 2])
mc_cases("mc/labels_extra", [0, 1, 1, 0, 1], [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3],
                                              [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]], labels=[0, 1, 2])
mc_cases("mc/labels_unordered", mc_y, mc_s, labels=[0, 2, 1])
mc_cases("mc/labels_dup", mc_y, mc_s, labels=[0, 1, 1])
mc_cases("mc/labels_wrong_count", mc_y, mc_s, labels=[0, 1, 2, 3])
mc_cases("mc/labels_missing", mc_y, mc_s, labels=[0, 1, 3])
mc_cases("mc/not_prob", mc_y, [[a * 2 for a in r] for r in mc_s])
mc_cases("mc/cols_mismatch", mc_y, [r[:2] + [r[2]] + [0.0] for r in mc_s])
mc_cases("mc/four_labels_three_cols", [0, 1, 2, 3, 0, 1], [[0.5, 0.3, 0.2]] * 6)
mc_cases("mc/ties", [0, 1, 2, 0, 1, 2, 0, 1, 2], [[1 / 3, 1 / 3, 1 / 3]] * 9)
mc_cases("mc/perfect", [0, 1, 2, 0, 1, 2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 2)
mc_cases("mc/vector_score", mc_y, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
add("mc/raise", "roc_auc_score", y_true=mc_y, y_score=mc_s)
add("mc/max_fpr", "roc_auc_score", y_true=mc_y, y_score=mc_s, multi_class="ovr", max_fpr=0.5)
add("mc/max_fpr1", "roc_auc_score", y_true=mc_y, y_score=mc_s, multi_class="ovr", max_fpr=1.0)
add("mc/bad_mc", "roc_auc_score", y_true=mc_y, y_score=mc_s, multi_class="ovx")
add("mc/binary_3cols", "roc_auc_score", y_true=[0, 1, 1, 0], y_score=probs(4, 3, 3), multi_class="ovr")
add("mc/binary_3cols_labels", "roc_auc_score", y_true=[0, 1, 1, 0], y_score=probs(4, 3, 3), multi_class="ovr",
    labels=[0, 1, 2])
add("mc/binary_3cols_labels_ovo", "roc_auc_score", y_true=[0, 1, 1, 0, 1], y_score=probs(5, 3, 3),
    multi_class="ovo", labels=[0, 1, 2])
add("mc/binary_2cols", "roc_auc_score", y_true=[0, 1, 1, 0], y_score=probs(4, 2, 3))
add("mc/binary_1col", "roc_auc_score", y_true=[0, 1, 1, 0], y_score=[[0.1], [0.9], [0.6], [0.3]])
for name in ("average_precision_score",):
    add(f"mc/{name}", name, y_true=mc_y, y_score=mc_s)
    add(f"mc/{name}/str", name, y_true=["x", "y", "z", "z", "y", "x", "z"], y_score=mc_s)
    add(f"mc/{name}/none", name, y_true=mc_y, y_score=mc_s, average=None)
    add(f"mc/{name}/weighted_w", name, y_true=mc_y, y_score=mc_s, average="weighted",
        sample_weight=[1, 2, 3, 0, 1, 1, 2])
    add(f"mc/{name}/micro", name, y_true=mc_y, y_score=mc_s, average="micro")
    add(f"mc/{name}/pl", name, y_true=mc_y, y_score=mc_s, pos_label=2)
    add(f"mc/{name}/shape", name, y_true=mc_y, y_score=[r[:2] for r in mc_s])
    add(f"mc/{name}/vector", name, y_true=mc_y, y_score=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
for i, (n, k, dec) in enumerate([(20, 3, 2), (40, 4, 4), (100, 5, 1), (150, 3, 3), (80, 6, 4)]):
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    s = probs(n, k, dec)
    mc_cases(f"mc/rand{i}", y, s)
    mc_cases(f"mc/rand{i}_w", y, s, w=rng.random(n).round(3))

# --- random binary ---------------------------------------------------------------------------------------------
for i, n in enumerate([4, 5, 7, 10, 16, 25, 50, 100, 250, 500]):
    p = rng.random()
    y = (rng.random(n) < p).astype(int)
    if i % 3 == 0:
        s = rng.random(n).round(5)
    elif i % 3 == 1:
        s = rng.integers(0, max(2, n // 10), n) / 7.0  # many ties
    else:
        s = rng.normal(size=n).round(1)
    all_binary(f"rand/{i}_{n}", y, s)
    w = rng.random(n).round(4)
    w[rng.random(n) < 0.2] = 0.0
    for name in BIN:
        add(f"rand/{i}_{n}/w/{name}", name, y_true=y, y_score=s, sample_weight=w)
    add(f"rand/{i}_{n}/maxfpr", "roc_auc_score", y_true=y, y_score=s, max_fpr=0.3)
    ys = np.where(y == 1, "pos", "neg")
    add(f"rand/{i}_{n}/str_ap", "average_precision_score", y_true=ys, y_score=s, pos_label="pos")
    add(f"rand/{i}_{n}/str_roc", "roc_curve", y_true=ys, y_score=s, pos_label="neg")

# larger inputs: one call per metric
for i, n in enumerate([1000, 2000]):
    y = (rng.random(n) < 0.3 + 0.2 * i).astype(int)
    s = rng.random(n).round(2 + i)
    w = rng.random(n).round(3)
    add(f"big/{n}/roc_auc_score", "roc_auc_score", y_true=y, y_score=s)
    add(f"big/{n}/roc_auc_score/w", "roc_auc_score", y_true=y, y_score=s, sample_weight=w)
    add(f"big/{n}/average_precision_score", "average_precision_score", y_true=y, y_score=s)
    add(f"big/{n}/roc_auc_score/maxfpr", "roc_auc_score", y_true=y, y_score=s, max_fpr=0.2)
    if n == 1000:
        add(f"big/{n}/roc_curve", "roc_curve", y_true=y, y_score=s, sample_weight=w)
        add(f"big/{n}/precision_recall_curve", "precision_recall_curve", y_true=y, y_score=s, drop_intermediate=True)

# more adversarial inputs
add("adv/roc_curve/mc_str_pl", "roc_curve", y_true=["a", "b", "c", "a", "c"], y_score=[0.1, 0.4, 0.9, 0.3, 0.2],
    pos_label="c")
add("adv/pr_curve/mc_str_pl", "precision_recall_curve", y_true=["a", "b", "c", "a", "c"],
    y_score=[0.1, 0.4, 0.9, 0.3, 0.2], pos_label="c", drop_intermediate=True)
add("adv/roc_curve/empty_pl", "roc_curve", y_true=[], y_score=[], pos_label=1)
add("adv/pr_curve/empty_pl", "precision_recall_curve", y_true=[], y_score=[], pos_label=1)
add("adv/roc_curve/column_true", "roc_curve", y_true=[[0], [1], [1], [0]], y_score=[0.2, 0.7, 0.4, 0.5])
add("adv/roc_auc/column_score", "roc_auc_score", y_true=[0, 1, 1, 0], y_score=[[0.2], [0.7], [0.4], [0.5]])
add("adv/roc_auc/bools", "roc_auc_score", y_true=[True, False, True, False], y_score=[0.9, 0.1, 0.4, 0.5])
add("adv/roc_auc/ml_1d_score", "roc_auc_score", y_true=[[1, 0], [0, 1], [1, 1]], y_score=[0.2, 0.7, 0.4])
add("adv/roc_auc/mc_labels_str_for_int", "roc_auc_score", y_true=mc_y, y_score=mc_s, multi_class="ovr",
    labels=["0", "1", "2"])
add("adv/roc_auc/mc_ovo_w", "roc_auc_score", y_true=mc_y, y_score=mc_s, multi_class="ovo",
    sample_weight=[1.0] * 7)
add("adv/roc_auc/mc_nan", "roc_auc_score", y_true=mc_y, y_score=[[float("nan"), 0.5, 0.5]] + mc_s[1:],
    multi_class="ovr")
add("adv/roc_auc/mc_one_row_off", "roc_auc_score", y_true=mc_y, y_score=[[0.5, 0.3, 0.2001]] + mc_s[1:],
    multi_class="ovr")
add("adv/roc_auc/mc_within_tol", "roc_auc_score", y_true=mc_y, y_score=[[0.5, 0.3, 0.2000001]] + mc_s[1:],
    multi_class="ovo")
add("adv/roc_auc/len_mismatch", "roc_auc_score", y_true=[0, 1, 1], y_score=[0.1, 0.2])
add("adv/roc_auc/one_class_len_mismatch", "roc_auc_score", y_true=[1, 1, 1], y_score=[0.1, 0.2])
add("adv/roc_auc/w_len_mismatch", "roc_auc_score", y_true=[0, 1, 1], y_score=[0.1, 0.2, 0.3],
    sample_weight=[1.0, 2.0])
add("adv/ap/bool_pl", "average_precision_score", y_true=[True, False, True, False], y_score=[0.9, 0.1, 0.4, 0.5],
    pos_label=True)
add("adv/ap/str_pl_int_true", "average_precision_score", y_true=[0, 1, 1, 0], y_score=[0.9, 0.1, 0.4, 0.5],
    pos_label="1")
add("adv/ap/minus_one", "average_precision_score", y_true=[-1, 1, 1, -1], y_score=[0.9, 0.1, 0.4, 0.5])
add("adv/ap/continuous", "average_precision_score", y_true=[0.2, 1.0, 0.0], y_score=[0.9, 0.1, 0.4])
add("adv/ap/all_equal_w", "average_precision_score", y_true=[0, 1, 1, 0, 1], y_score=[0.5] * 5,
    sample_weight=[0.5, 1.0, 0.0, 2.0, 1.5])
add("adv/auc/roc_points", "auc", x=[0.0, 0.0, 0.5, 0.5, 1.0], y=[0.0, 0.5, 0.5, 1.0, 1.0])
add("adv/auc/dec_with_flat", "auc", x=[3, 2, 2, 1], y=[1, 2, 3, 4])
add("adv/auc/huge", "auc", x=[0.0, 1e300, 2e300], y=[1e300, 1e300, 1e300])
for d in [True, False]:
    add(f"adv/roc_curve/collinear/{d}", "roc_curve", y_true=[1, 1, 1, 0, 0, 0, 1, 0],
        y_score=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], drop_intermediate=d)
    add(f"adv/pr_curve/collinear/{d}", "precision_recall_curve", y_true=[1, 1, 1, 0, 0, 0, 1, 0],
        y_score=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], drop_intermediate=d)

# InvalidParameterError subclasses ValueError (and TypeError); record it as the ValueError it is.
for case in C.cases:
    err = case.get("error")
    if err and err["kind"] == "InvalidParameterError":
        err["kind"] = "ValueError"
assert InvalidParameterError.__mro__[1] is ValueError
C.write()
