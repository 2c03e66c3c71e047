"""Reference fixtures for the scikit-learn classification metrics (crates/metrics/src/classification).

Run with the pinned reference venv:  /work/main/.venv-ref/bin/python scripts/reference/gen_classification.py
Writes crates/metrics/tests/fixtures/classification.json.

sklearn's parameter validation raises `InvalidParameterError`, a subclass of ValueError (and TypeError); the
fixtures record it as "ValueError", the builtin class a caller would catch.
"""
import os
import sys
import warnings

import numpy as np
from sklearn import metrics as M

sys.path.insert(0, os.path.dirname(__file__))
from refcommon import Cases  # noqa: E402

# UndefinedMetricWarning and friends are part of the reference's behaviour but not of its results.
warnings.simplefilter("ignore")

C = Cases("classification", "scripts/reference/gen_classification.py", ["scikit-learn", "numpy"])
rng = np.random.default_rng(20240611)


def prfs_post(r):
    p, rc, f, s = r
    return {"precision": p, "recall": rc, "fbeta": f, "support": s}


def add(case_id, name, **kwargs):
    fn = getattr(M, name)
    post = prfs_post if name == "precision_recall_fscore_support" else (lambda r: r)
    C.add(case_id, name, fn, kwargs, post=post)


# ---------------------------------------------------------------- base data sets
DATA = {
    "bin": ([0, 1, 1, 0, 1, 1, 0, 0, 1], [0, 1, 0, 0, 1, 1, 1, 0, 1]),
    "bin_allwrong": ([0, 1, 1, 0], [1, 0, 0, 1]),
    "mc": ([2, 0, 2, 2, 0, 1, 3, 3, 1], [0, 0, 2, 2, 0, 2, 3, 1, 1]),
    "mc_neg": ([-1, 5, 5, -1, 10, 10, 5], [5, 5, -1, -1, 10, 5, 5]),
    "str": (["cat", "ant", "cat", "cat", "ant", "bird"], ["ant", "ant", "cat", "cat", "ant", "cat"]),
    "unicode": (["é", "日本", "é", "a", "Ω", "日本"], ["日本", "日本", "é", "a", "é", "Ω"]),
    "empty_str": (["", "x", "", "x"], ["", "", "x", "x"]),
    "one_class": ([3, 3, 3], [3, 3, 3]),
    "pred_only": ([0, 0, 1, 1], [0, 2, 1, 2]),
    "true_only": ([0, 2, 1, 2], [0, 0, 1, 1]),
    "allwrong_mc": ([0, 1, 2], [1, 2, 0]),
    "single": ([1], [0]),
    "single_ok": (["a"], ["a"]),
    "bin_str": (["no", "yes", "yes", "no"], ["yes", "yes", "no", "no"]),
    "ties8": ([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1]),
    "mixed_in_list": ([1, "a", "a", 2], ["a", 1, "a", "2"]),
}
WEIGHTS = {
    "bin": [1, 2, 0.5, 1, 1, 3, 0, 2, 1],
    "mc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "str": [1, 1, 2, 2, 3, 3],
    "pred_only": [1, 0, 2, 0],
    "ties8": [1] * 16,
}

# ---------------------------------------------------------------- per-data-set sweeps
for dname, (yt, yp) in DATA.items():
    w = WEIGHTS.get(dname)
    for norm in (True, False):
        add(f"acc/{dname}/norm={norm}", "accuracy_score", y_true=yt, y_pred=yp, normalize=norm)
        if w is not None:
            add(f"acc/{dname}/w/norm={norm}", "accuracy_score", y_true=yt, y_pred=yp, normalize=norm, sample_weight=w)
    add(f"cm/{dname}", "confusion_matrix", y_true=yt, y_pred=yp)
    for nz in ("true", "pred", "all"):
        add(f"cm/{dname}/{nz}", "confusion_matrix", y_true=yt, y_pred=yp, normalize=nz)
    if w is not None:
        add(f"cm/{dname}/w", "confusion_matrix", y_true=yt, y_pred=yp, sample_weight=w)
        add(f"cm/{dname}/w/true", "confusion_matrix", y_true=yt, y_pred=yp, sample_weight=w, normalize="true")
    add(f"mcc/{dname}", "matthews_corrcoef", y_true=yt, y_pred=yp)
    add(f"bacc/{dname}", "balanced_accuracy_score", y_true=yt, y_pred=yp)
    add(f"bacc/{dname}/adj", "balanced_accuracy_score", y_true=yt, y_pred=yp, adjusted=True)
    for wts in (None, "linear", "quadratic"):
        add(f"kappa/{dname}/{wts}", "cohen_kappa_score", y1=yt, y2=yp, weights=wts)
    if w is not None:
        add(f"mcc/{dname}/w", "matthews_corrcoef", y_true=yt, y_pred=yp, sample_weight=w)
        add(f"bacc/{dname}/w/adj", "balanced_accuracy_score", y_true=yt, y_pred=yp, sample_weight=w, adjusted=True)
        add(f"kappa/{dname}/w/quadratic", "cohen_kappa_score", y1=yt, y2=yp, weights="quadratic", sample_weight=w)
    for avg in ("binary", "micro", "macro", "weighted", None):
        for zd in ("warn", 0, 1, float("nan")):
            add(f"prfs/{dname}/{avg}/zd={zd}", "precision_recall_fscore_support",
                y_true=yt, y_pred=yp, average=avg, zero_division=zd)
        for name in ("precision_score", "recall_score", "f1_score"):
            add(f"{name}/{dname}/{avg}", name, y_true=yt, y_pred=yp, average=avg)
        add(f"fbeta/{dname}/{avg}/0.5", "fbeta_score", y_true=yt, y_pred=yp, beta=0.5, average=avg)
        if w is not None:
            add(f"prfs/{dname}/{avg}/w", "precision_recall_fscore_support",
                y_true=yt, y_pred=yp, average=avg, sample_weight=w, beta=2.0)
    for digits in (2, 0, 4):
        add(f"report/{dname}/d={digits}", "classification_report", y_true=yt, y_pred=yp, digits=digits)
    add(f"report/{dname}/dict", "classification_report", y_true=yt, y_pred=yp, output_dict=True)
    for zd in (0, 1, float("nan")):
        add(f"report/{dname}/zd={zd}", "classification_report", y_true=yt, y_pred=yp, zero_division=zd)
        add(f"report/{dname}/dict/zd={zd}", "classification_report", y_true=yt, y_pred=yp, zero_division=zd,
            output_dict=True)
    if w is not None:
        add(f"report/{dname}/w", "classification_report", y_true=yt, y_pred=yp, sample_weight=w, digits=3)
        add(f"report/{dname}/w/dict", "classification_report", y_true=yt, y_pred=yp, sample_weight=w,
            output_dict=True)

# ---------------------------------------------------------------- labels argument
yt, yp = DATA["mc"]
for lid, labels in {
    "subset": [0, 2], "reorder": [3, 1, 0, 2], "absent": [0, 7], "all_absent": [7, 8], "dup": [1, 1, 2],
    "superset": [0, 1, 2, 3, 4], "empty": [], "single": [2],
}.items():
    add(f"cm/labels/{lid}", "confusion_matrix", y_true=yt, y_pred=yp, labels=labels)
    add(f"cm/labels/{lid}/true", "confusion_matrix", y_true=yt, y_pred=yp, labels=labels, normalize="true")
    for avg in ("micro", "macro", "weighted", None):
        for zd in ("warn", 1, float("nan")):
            add(f"prfs/labels/{lid}/{avg}/zd={zd}", "precision_recall_fscore_support",
                y_true=yt, y_pred=yp, labels=labels, average=avg, zero_division=zd)
    add(f"f1/labels/{lid}", "f1_score", y_true=yt, y_pred=yp, labels=labels, average="macro")
    add(f"kappa/labels/{lid}", "cohen_kappa_score", y1=yt, y2=yp, labels=labels)
    add(f"kappa/labels/{lid}/lin", "cohen_kappa_score", y1=yt, y2=yp, labels=labels, weights="linear")
    add(f"report/labels/{lid}", "classification_report", y_true=yt, y_pred=yp, labels=labels)
    add(f"report/labels/{lid}/dict", "classification_report", y_true=yt, y_pred=yp, labels=labels, output_dict=True)
ys, ps = DATA["str"]
add("report/str/labels", "classification_report", y_true=ys, y_pred=ps, labels=["cat", "ant", "dog"])
add("report/str/labels/names", "classification_report", y_true=ys, y_pred=ps, labels=["cat", "ant", "bird"],
    target_names=["Katze", "Ameise", "Vogel"])
add("cm/str/labels", "confusion_matrix", y_true=ys, y_pred=ps, labels=["cat", "zebra", "ant"])
add("cm/str/labels/absent", "confusion_matrix", y_true=ys, y_pred=ps, labels=["zebra"])
add("prfs/str/labels", "precision_recall_fscore_support", y_true=ys, y_pred=ps, labels=["bird", "dog"], average=None)

# ---------------------------------------------------------------- target_names, digits
add("report/names", "classification_report", y_true=yt, y_pred=yp, target_names=["zero", "one", "two", "three"])
add("report/names/dict", "classification_report", y_true=yt, y_pred=yp, target_names=["z", "o", "t", "th"],
    output_dict=True)
add("report/names/long", "classification_report", y_true=yt, y_pred=yp,
    target_names=["a very long class name indeed", "b", "ç", "日本語"])
add("report/names/mismatch", "classification_report", y_true=yt, y_pred=yp, target_names=["a", "b"])
add("report/names/mismatch_labels", "classification_report", y_true=yt, y_pred=yp, labels=[0, 1, 2],
    target_names=["a", "b"])
add("report/names/mismatch_labels/dict", "classification_report", y_true=yt, y_pred=yp, labels=[0, 1, 2],
    target_names=["a", "b"], output_dict=True)
add("report/names/empty_labels_given", "classification_report", y_true=yt, y_pred=yp, labels=[0, 1],
    target_names=[])
add("report/names/dup/dict", "classification_report", y_true=yt, y_pred=yp, target_names=["a", "a", "b", "c"],
    output_dict=True)
for d in (1, 3, 5, 10, 15, 20):
    add(f"report/digits={d}", "classification_report", y_true=yt, y_pred=yp, digits=d)
add("report/digits=-1", "classification_report", y_true=yt, y_pred=yp, digits=-1)
add("report/bigweights", "classification_report", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[1e16, 3e20, 0.1])
add("report/smallweights", "classification_report", y_true=[0, 1, 1], y_pred=[0, 1, 0],
    sample_weight=[1e-7, 3e-5, 0.25])
add("report/intweights", "classification_report", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[1, 2, 3])

# ---------------------------------------------------------------- binary / pos_label
yb, pb = DATA["bin"]
for pl in (0, 1, 2, "a"):
    add(f"prfs/bin/pos={pl}", "precision_recall_fscore_support", y_true=yb, y_pred=pb, average="binary",
        pos_label=pl)
    add(f"f1/bin/pos={pl}", "f1_score", y_true=yb, y_pred=pb, pos_label=pl)
    add(f"f1/bin/pos={pl}/macro", "f1_score", y_true=yb, y_pred=pb, pos_label=pl, average="macro")
for pl in ("yes", "no", "maybe", 1):
    add(f"f1/bin_str/pos={pl}", "f1_score", y_true=DATA["bin_str"][0], y_pred=DATA["bin_str"][1], pos_label=pl)
for pl in (3, 1, 5):
    add(f"f1/one_class/pos={pl}", "f1_score", y_true=[3, 3, 3], y_pred=[3, 3, 3], pos_label=pl)
    add(f"prec/one_class/pos={pl}/zd1", "precision_score", y_true=[3, 3, 3], y_pred=[3, 3, 3], pos_label=pl,
        zero_division=1)
add("f1/bin/labels_ignored", "f1_score", y_true=yb, y_pred=pb, labels=[0])
add("f1/bin/multiclass_binary", "f1_score", y_true=[0, 1, 2], y_pred=[0, 1, 1], average="binary")

# ---------------------------------------------------------------- fbeta betas
for beta in (0.0, 0.5, 1.0, 2.0, 10.0, float("inf")):
    for avg in ("binary", "macro", "micro", "weighted", None):
        add(f"fbeta/beta={beta}/{avg}", "fbeta_score", y_true=yb, y_pred=pb, beta=beta, average=avg)
    add(f"fbeta/mc/beta={beta}", "fbeta_score", y_true=yt, y_pred=yp, beta=beta, average=None)
add("fbeta/negative_beta", "fbeta_score", y_true=yb, y_pred=pb, beta=-1.0)

# ---------------------------------------------------------------- errors
add("err/len/acc", "accuracy_score", y_true=[0, 1], y_pred=[0, 1, 1])
add("err/len/f1", "f1_score", y_true=[0, 1], y_pred=[0])
add("err/len/cm", "confusion_matrix", y_true=[0, 1], y_pred=[0])
add("err/len/report", "classification_report", y_true=[0, 1, 2], y_pred=[0, 1])
add("err/len/mcc", "matthews_corrcoef", y_true=[0, 1], y_pred=[0])
add("err/len/kappa", "cohen_kappa_score", y1=[0, 1], y2=[0])
add("err/len/bacc", "balanced_accuracy_score", y_true=[0, 1], y_pred=[0])
add("err/len/weights", "accuracy_score", y_true=[0, 1], y_pred=[0, 1], sample_weight=[1.0])
add("err/len/cm_weights", "confusion_matrix", y_true=[0, 1], y_pred=[0, 1], sample_weight=[1.0, 2.0, 3.0])
for name in ("accuracy_score", "f1_score", "confusion_matrix", "matthews_corrcoef", "balanced_accuracy_score",
             "precision_score", "recall_score", "precision_recall_fscore_support", "classification_report"):
    add(f"err/empty/{name}", name, y_true=[], y_pred=[])
add("err/empty/kappa", "cohen_kappa_score", y1=[], y2=[])
add("err/empty/cm_labels", "confusion_matrix", y_true=[], y_pred=[], labels=[0, 1])
for avg in ("bogus", "samples"):
    add(f"err/avg/{avg}", "f1_score", y_true=yt, y_pred=yp, average=avg)
    add(f"err/avg/{avg}/prfs", "precision_recall_fscore_support", y_true=yb, y_pred=pb, average=avg)
add("err/binary_on_mc", "f1_score", y_true=yt, y_pred=yp)
add("err/binary_on_mc/prec", "precision_score", y_true=yt, y_pred=yp, average="binary")
add("err/binary_on_mc/str", "recall_score", y_true=ys, y_pred=ps)
add("err/pos_label_absent", "f1_score", y_true=yb, y_pred=pb, pos_label=7)
add("err/pos_label_absent/str", "precision_score", y_true=DATA["bin_str"][0], y_pred=DATA["bin_str"][1])
add("err/mix_types", "accuracy_score", y_true=[1, 2], y_pred=["1", "2"])
add("err/mix_types/f1", "f1_score", y_true=["a", "b"], y_pred=[0, 1], average="macro")
add("err/mix_types/cm", "confusion_matrix", y_true=["a", "b"], y_pred=[0, 1])
add("err/mix_types/report", "classification_report", y_true=["a", "b"], y_pred=[0, 1])
add("err/mix_types/kappa", "cohen_kappa_score", y1=["a", "b"], y2=[0, 1])
add("err/cm_normalize", "confusion_matrix", y_true=yt, y_pred=yp, normalize="rows")
add("err/kappa_weights", "cohen_kappa_score", y1=yt, y2=yp, weights="cubic")
add("err/zero_division", "f1_score", y_true=yt, y_pred=yp, average="macro", zero_division=2)
add("err/zero_division/str", "f1_score", y_true=yt, y_pred=yp, average="macro", zero_division="nan")
add("err/cm/labels_not_in_true", "confusion_matrix", y_true=[0, 0], y_pred=[1, 1], labels=[1])
add("err/kappa/labels_not_in_y1", "cohen_kappa_score", y1=[0, 0], y2=[1, 1], labels=[1])

# ---------------------------------------------------------------- zero weights / degenerate
add("w0/acc", "accuracy_score", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0])
add("w0/acc/unnorm", "accuracy_score", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0], normalize=False)
for avg in ("weighted", "macro", "micro", None, "binary"):
    add(f"w0/prfs/{avg}", "precision_recall_fscore_support", y_true=[0, 1, 1, 2][:3], y_pred=[0, 1, 0],
        sample_weight=[0, 0, 0], average=avg)
    add(f"w0part/prfs/{avg}", "precision_recall_fscore_support", y_true=[0, 1, 2, 2], y_pred=[0, 1, 1, 2],
        sample_weight=[0, 0, 1, 1], average=avg)
add("w0/cm", "confusion_matrix", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0])
add("w0/cm/true", "confusion_matrix", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0], normalize="true")
add("w0/cm/all", "confusion_matrix", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0], normalize="all")
add("w0/mcc", "matthews_corrcoef", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0])
add("w0/kappa", "cohen_kappa_score", y1=[0, 1, 1], y2=[0, 1, 0], sample_weight=[0, 0, 0])
add("w0/bacc", "balanced_accuracy_score", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0])
add("w0/report", "classification_report", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0])
add("w0/report/dict", "classification_report", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[0, 0, 0],
    output_dict=True)
add("wneg/acc", "accuracy_score", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[1, -1, 0.5])
add("mcc/constant_pred", "matthews_corrcoef", y_true=[0, 1, 0, 1], y_pred=[1, 1, 1, 1])
add("kappa/identical_one_label", "cohen_kappa_score", y1=[1, 1], y2=[1, 1])
add("kappa/no_common", "cohen_kappa_score", y1=[0, 0], y2=[1, 1], labels=[0])
add("bacc/pred_only_adj", "balanced_accuracy_score", y_true=[0, 0, 0], y_pred=[0, 1, 2], adjusted=True)
add("bacc/one_class_adj", "balanced_accuracy_score", y_true=[1, 1], y_pred=[1, 1], adjusted=True)

# ---------------------------------------------------------------- top_k_accuracy_score
def scores(n, k):
    return rng.random((n, k)).round(3).tolist()


yk = [0, 1, 2, 2, 1, 0, 3, 3]
sk = scores(8, 4)
for k in (1, 2, 3, 4, 5):
    add(f"topk/mc/k={k}", "top_k_accuracy_score", y_true=yk, y_score=sk, k=k)
    add(f"topk/mc/k={k}/unnorm", "top_k_accuracy_score", y_true=yk, y_score=sk, k=k, normalize=False)
    add(f"topk/mc/k={k}/w", "top_k_accuracy_score", y_true=yk, y_score=sk, k=k,
        sample_weight=[1, 2, 3, 4, 0.5, 0.25, 0, 1])
    add(f"topk/mc/k={k}/w/unnorm", "top_k_accuracy_score", y_true=yk, y_score=sk, k=k, normalize=False,
        sample_weight=[1, 2, 3, 4, 0.5, 0.25, 0, 1])
ties = [[0.5, 0.5, 0.0, 0.0], [0.2, 0.2, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.3, 0.1]]
for k in (1, 2, 3):
    add(f"topk/ties/k={k}", "top_k_accuracy_score", y_true=[0, 1, 2, 3], y_score=ties, k=k)
    add(f"topk/ties/k={k}/b", "top_k_accuracy_score", y_true=[1, 2, 3, 0], y_score=ties, k=k)
add("topk/labels", "top_k_accuracy_score", y_true=[0, 1, 1, 0], y_score=scores(4, 3), labels=[0, 1, 5], k=1)
add("topk/labels/str", "top_k_accuracy_score", y_true=["b", "c", "a"], y_score=scores(3, 4),
    labels=["a", "b", "c", "d"], k=2)
add("topk/str", "top_k_accuracy_score", y_true=["b", "c", "a", "c"], y_score=scores(4, 3), k=1)
add("topk/err/labels_unordered", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 3),
    labels=[2, 1, 0])
add("topk/err/labels_dup", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 3), labels=[0, 1, 1])
add("topk/err/labels_count", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 3), labels=[0, 1, 2, 3])
add("topk/err/ytrue_not_in_labels", "top_k_accuracy_score", y_true=[0, 1, 4], y_score=scores(3, 3),
    labels=[0, 1, 2])
add("topk/err/nclasses", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 4))
add("topk/err/len", "top_k_accuracy_score", y_true=[0, 1, 2, 1], y_score=scores(3, 3))
add("topk/err/k0", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 3), k=0)
add("topk/err/1d_mc", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=[0.1, 0.2, 0.3])
add("topk/err/bin_2d", "top_k_accuracy_score", y_true=[0, 1, 1], y_score=scores(3, 3))
add("topk/err/single_class", "top_k_accuracy_score", y_true=[1, 1, 1], y_score=[0.1, 0.2, 0.3])
for k in (1, 2):
    add(f"topk/bin/k={k}", "top_k_accuracy_score", y_true=[0, 1, 1, 0, 1], y_score=[0.1, 0.6, 0.4, 0.5, 0.9], k=k)
    add(f"topk/bin/k={k}/logits", "top_k_accuracy_score", y_true=[0, 1, 1, 0, 1], y_score=[-1.0, 2.0, 0.3, -0.2, 0.0],
        k=k)
    add(f"topk/bin/k={k}/col", "top_k_accuracy_score", y_true=[0, 1, 1, 0], y_score=[[0.2], [0.7], [0.5], [0.6]],
        k=k)
    add(f"topk/bin/k={k}/str", "top_k_accuracy_score", y_true=["n", "y", "y"], y_score=[0.3, 0.8, 0.2], k=k)
    add(f"topk/bin/k={k}/w", "top_k_accuracy_score", y_true=[0, 1, 1, 0, 1], y_score=[0.1, 0.6, 0.4, 0.5, 0.9], k=k,
        sample_weight=[1, 2, 3, 0.5, 0], normalize=False)
add("topk/bin/labels3", "top_k_accuracy_score", y_true=[0, 1, 1], y_score=scores(3, 3), labels=[0, 1, 2], k=1)
add("topk/bin/labels2_2d", "top_k_accuracy_score", y_true=[1, 1, 1], y_score=[0.2, 0.9, 0.6], labels=[0, 1], k=1)

# ---------------------------------------------------------------- random multiclass cases
for i in range(40):
    n = int(rng.integers(1, 60))
    k = int(rng.integers(2, 7))
    string = i % 4 == 3
    yt_r = rng.integers(0, k, n)
    yp_r = np.where(rng.random(n) < 0.5, yt_r, rng.integers(0, k, n))
    if string:
        yt_r = [f"c{v}" for v in yt_r]
        yp_r = [f"c{v}" for v in yp_r]
    else:
        yt_r = yt_r.tolist()
        yp_r = yp_r.tolist()
    w_r = rng.random(n).round(4).tolist() if i % 2 == 0 else None
    add(f"rand{i}/acc", "accuracy_score", y_true=yt_r, y_pred=yp_r, sample_weight=w_r)
    add(f"rand{i}/cm", "confusion_matrix", y_true=yt_r, y_pred=yp_r, sample_weight=w_r)
    add(f"rand{i}/prfs", "precision_recall_fscore_support", y_true=yt_r, y_pred=yp_r, sample_weight=w_r,
        average=[None, "macro", "weighted", "micro"][i % 4], beta=[1.0, 0.5, 2.0][i % 3])
    add(f"rand{i}/report", "classification_report", y_true=yt_r, y_pred=yp_r, sample_weight=w_r, digits=2 + i % 3)
    add(f"rand{i}/report/dict", "classification_report", y_true=yt_r, y_pred=yp_r, sample_weight=w_r,
        output_dict=True)
    add(f"rand{i}/mcc", "matthews_corrcoef", y_true=yt_r, y_pred=yp_r, sample_weight=w_r)
    add(f"rand{i}/kappa", "cohen_kappa_score", y1=yt_r, y2=yp_r, sample_weight=w_r,
        weights=[None, "linear", "quadratic"][i % 3])
    add(f"rand{i}/bacc", "balanced_accuracy_score", y_true=yt_r, y_pred=yp_r, sample_weight=w_r, adjusted=i % 2 == 1)
    if not string:
        labels_r = sorted(set(yt_r))
        if len(labels_r) >= 2:
            sc = rng.random((n, len(labels_r))).round(2).tolist() if len(labels_r) > 2 else rng.random(n).tolist()
            # remap y_true to the column order 0..m-1 is not needed: labels are the sorted uniques
            add(f"rand{i}/topk", "top_k_accuracy_score", y_true=yt_r, y_score=sc, k=1 + i % 3, sample_weight=w_r)

# ---------------------------------------------------------------- larger random cases (many classes)
for i in range(12):
    n = int(rng.integers(100, 700))
    k = int(rng.integers(8, 30))
    yt_r = rng.integers(-3, k, n)
    yp_r = np.where(rng.random(n) < 0.4, yt_r, rng.integers(-3, k + 2, n))
    yt_r, yp_r = yt_r.tolist(), yp_r.tolist()
    if i % 4 == 1:
        yt_r = [f"lbl{v}" for v in yt_r]
        yp_r = [f"lbl{v}" for v in yp_r]
    w_r = rng.random(n).round(3).tolist() if i % 2 == 0 else None
    add(f"big{i}/report", "classification_report", y_true=yt_r, y_pred=yp_r, sample_weight=w_r, digits=2 + i % 4)
    add(f"big{i}/report/dict", "classification_report", y_true=yt_r, y_pred=yp_r, sample_weight=w_r,
        output_dict=True)
    avg = ("macro", "weighted", "micro", None)[i % 4]
    add(f"big{i}/prfs/{avg}", "precision_recall_fscore_support", y_true=yt_r, y_pred=yp_r, sample_weight=w_r,
        average=avg, zero_division=[0, 1, float("nan"), "warn"][i % 4])
    if i % 3 == 0:
        add(f"big{i}/cm/true", "confusion_matrix", y_true=yt_r, y_pred=yp_r, sample_weight=w_r, normalize="true")
    else:
        add(f"big{i}/kappa", "cohen_kappa_score", y1=yt_r, y2=yp_r, sample_weight=w_r, weights="quadratic")

# ---------------------------------------------------------------- formatting ties and odd labels
tie_t = [0, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2]
tie_p = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 1]
for d in (0, 1, 2, 3, 4):
    add(f"report/ties/d={d}", "classification_report", y_true=tie_t, y_pred=tie_p, digits=d)
add("report/ties/w", "classification_report", y_true=tie_t, y_pred=tie_p, sample_weight=[0.5] * 13, digits=1)
big_labels = ([1000000, -5, 4096, 4095, -5, 1000000], [1000000, 4096, 4096, -5, -5, 4095])
add("report/big_int_labels", "classification_report", y_true=big_labels[0], y_pred=big_labels[1])
add("cm/big_int_labels", "confusion_matrix", y_true=big_labels[0], y_pred=big_labels[1], labels=[4096, -5, 7])
add("report/labels_cover_reordered", "classification_report", y_true=yt, y_pred=yp, labels=[3, 2, 1, 0])
add("report/labels_cover_plus_absent", "classification_report", y_true=yt, y_pred=yp, labels=[3, 9, 2, 1, 0])
add("report/labels_cover_plus_absent/dict", "classification_report", y_true=yt, y_pred=yp, labels=[3, 9, 2, 1, 0],
    output_dict=True)
add("report/str/labels_subset/dict", "classification_report", y_true=ys, y_pred=ps, labels=["cat"], output_dict=True)
add("report/pred_only_label_excluded", "classification_report", y_true=[0, 0, 1, 1], y_pred=[0, 2, 1, 2],
    labels=[0, 1])
add("report/no_correct_unweighted/dict", "classification_report", y_true=[0, 1, 2], y_pred=[1, 2, 0],
    output_dict=True)
add("report/no_correct_selected", "classification_report", y_true=[0, 1, 2, 3], y_pred=[1, 0, 2, 3], labels=[0, 1])
add("kappa/replace_undefined", "cohen_kappa_score", y1=[1, 1], y2=[1, 1], replace_undefined_by=0.25)
add("kappa/replace_undefined/labels", "cohen_kappa_score", y1=[0, 0], y2=[1, 1], labels=[0], replace_undefined_by=-1.0)
add("acc/int_weights", "accuracy_score", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[1, 2, 3])
add("cm/int_weights/pred", "confusion_matrix", y_true=[0, 1, 1], y_pred=[0, 1, 0], sample_weight=[1, 2, 3],
    normalize="pred")
add("err/unknown_kwarg", "f1_score", y_true=[0, 1], y_pred=[0, 1], foo=1)
add("f1/str_single/pos_str", "f1_score", y_true=["a", "a"], y_pred=["a", "a"], pos_label="a")
add("f1/str_single/pos_other", "f1_score", y_true=["a", "a"], y_pred=["a", "a"], pos_label="b", zero_division=1)
add("f1/str_single/pos_int", "f1_score", y_true=["a", "a"], y_pred=["a", "a"], pos_label=1)
add("recall/pos_only_in_pred", "recall_score", y_true=[0, 0, 0], y_pred=[0, 1, 1])
add("precision/pos_only_in_true", "precision_score", y_true=[0, 1, 1], y_pred=[0, 0, 0])
add("precision/pos_only_in_true/nan", "precision_score", y_true=[0, 1, 1], y_pred=[0, 0, 0],
    zero_division=float("nan"))
add("f1/macro/nan_zero_division_all", "f1_score", y_true=[0, 0], y_pred=[1, 1], average="macro",
    zero_division=float("nan"))
add("topk/k_big", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 3), k=7)
add("topk/err/nan_score", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=[[0.1, float("nan"), 0.2]] * 3)
add("topk/w0", "top_k_accuracy_score", y_true=[0, 1, 2], y_score=scores(3, 3), sample_weight=[0, 0, 0])
add("topk/neg_ties", "top_k_accuracy_score", y_true=[0, 1, 2, 2], y_score=[[-0.0, 0.0, -1.0]] * 4, k=1)
add("topk/err/empty", "top_k_accuracy_score", y_true=[], y_score=[])

# ---------------------------------------------------------------- labels of the other kind than the data
for fid, (yt_f, yp_f, lab_f) in {
    "strdata_intlabels": (["1", "2", "2", "3"], ["1", "2", "3", "3"], [1, 2]),
    "intdata_strlabels": ([1, 2, 2, 3], [1, 2, 3, 3], ["1", "3"]),
    "strdata_intlabels_nomatch": (["a", "b", "a"], ["a", "a", "b"], [1, 2]),
    "intdata_strlabels_cover": ([1, 2, 2], [1, 2, 1], ["1", "2"]),
}.items():
    add(f"foreign/{fid}/f1", "f1_score", y_true=yt_f, y_pred=yp_f, labels=lab_f, average=None)
    add(f"foreign/{fid}/prfs/macro", "precision_recall_fscore_support", y_true=yt_f, y_pred=yp_f, labels=lab_f,
        average="macro")
    add(f"foreign/{fid}/f1/binary", "f1_score", y_true=yt_f[:2], y_pred=yp_f[:2], labels=lab_f)
    add(f"foreign/{fid}/cm", "confusion_matrix", y_true=yt_f, y_pred=yp_f, labels=lab_f)
    add(f"foreign/{fid}/cm/true", "confusion_matrix", y_true=yt_f, y_pred=yp_f, labels=lab_f, normalize="true")
    add(f"foreign/{fid}/kappa", "cohen_kappa_score", y1=yt_f, y2=yp_f, labels=lab_f)
    add(f"foreign/{fid}/report", "classification_report", y_true=yt_f, y_pred=yp_f, labels=lab_f)
    add(f"foreign/{fid}/report/dict", "classification_report", y_true=yt_f, y_pred=yp_f, labels=lab_f,
        output_dict=True)

for c in C.cases:
    err = c.get("error")
    if err and err["kind"] == "InvalidParameterError":
        err["kind"] = "ValueError"
C.write()
