"""Optuna's TPESampler (defaults, seeded) on the functions of crates/train/examples/tpe_bench.rs.

Prints one JSON line per (function, seed) in the example's format. Run by scripts/bench/tpe.sh in .venv-optuna.
"""
import json
import math
import sys

import numpy as np
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(x):
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def hartmann6(x):
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j]) ** 2 for j in range(6))) for i in range(4))


def quadratic(x):
    return sum((v - 1.0) ** 2 for v in x)


FUNCTIONS = [
    ("branin", branin, [(-5.0, 10.0), (0.0, 15.0)], 0.0),
    ("hartmann6", hartmann6, [(0.0, 1.0)] * 6, 0.0),
    ("noisy_quadratic", quadratic, [(-5.0, 5.0)] * 4, 0.5),
]


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    for name, f, bounds, noise in FUNCTIONS:
        for seed in range(seeds):
            rng = np.random.default_rng(seed * 7919 + 17)
            best = {"obs": math.inf, "true": math.inf}
            curve = []

            def objective(trial):
                x = [trial.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(bounds)]
                truth = f(x)
                observed = truth + noise * rng.standard_normal()
                if observed < best["obs"]:
                    best["obs"], best["true"] = observed, truth
                curve.append(best["true"])
                return observed

            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="minimize")
            study.optimize(objective, n_trials=trials)
            print(json.dumps({"function": name, "seed": seed, "sampler": "optuna-tpe", "best": curve}))


if __name__ == "__main__":
    main()
