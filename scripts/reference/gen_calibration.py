"""Reference fixtures for the probabilistic classifier metrics (scikit-learn 1.9.1): log_loss with
labels=range(n_classes) and calibration_curve(strategy="uniform").

Run with the pinned reference venv: `.venv-ref/bin/python scripts/reference/gen_calibration.py`.
"""
import warnings

import numpy as np
import sklearn.metrics as skm
from sklearn.calibration import calibration_curve

from refcommon import Cases

warnings.simplefilter("ignore")

C = Cases("calibration", "scripts/reference/gen_calibration.py", ["scikit-learn", "numpy"])
rng = np.random.default_rng(20261206)


def log_loss(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return skm.log_loss(y_true, y_pred, labels=list(range(y_pred.shape[1])))


def add_log_loss(cid, y, p):
    C.add(f"log_loss/{cid}", "log_loss", log_loss, {"y_true": list(y), "y_pred": [list(r) for r in p]})


def softmax_rows(n, k):
    z = rng.normal(size=(n, k)) * 2.0
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


add_log_loss("binary_hand", [0, 1, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.35, 0.65]])
add_log_loss("certain", [0, 1], [[1.0, 0.0], [0.0, 1.0]])
add_log_loss("certain_wrong", [0, 1], [[0.0, 1.0], [1.0, 0.0]])
add_log_loss("three_hand", [2, 0, 1], [[0.1, 0.2, 0.7], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4]])
for n, k in [(7, 2), (50, 3), (131, 4), (1000, 2), (2500, 5)]:
    p = softmax_rows(n, k)
    y = rng.integers(0, k, size=n)
    add_log_loss(f"random_{n}x{k}", [int(v) for v in y], p.tolist())


def cal(y_true, y_prob, n_bins):
    t, p = calibration_curve(np.asarray(y_true), np.asarray(y_prob, dtype=np.float64), n_bins=n_bins)
    return {"prob_true": t, "prob_pred": p}


def add_cal(cid, y, p, n_bins):
    C.add(f"calibration_curve/{cid}/{n_bins}", "calibration_curve", cal,
          {"y_true": [bool(v) for v in y], "y_prob": list(map(float, p)), "n_bins": n_bins})


add_cal("hand", [0, 0, 1, 1, 1, 0], [0.1, 0.2, 0.9, 0.8, 0.5, 0.3], 5)
add_cal("edges", [0, 1, 0, 1, 1, 0, 1], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.5], 5)
add_cal("edges", [0, 1, 0, 1, 1, 0, 1], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.5], 10)
add_cal("one_bin", [0, 1, 1], [0.3, 0.6, 0.9], 1)
add_cal("out_of_range", [0, 1], [0.3, 1.2], 5)
for n in (20, 333, 4000):
    p = rng.random(n)
    y = rng.random(n) < p
    for b in (3, 10, 15):
        add_cal(f"random_{n}", y, p, b)

C.write()
