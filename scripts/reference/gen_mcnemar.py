"""Reference fixtures for McNemar's exact test (crates/metrics/src/significance.rs, metric "mcnemar"):
statsmodels.stats.contingency_tables.mcnemar(table, exact=True[, correction]) -> {"statistic", "pvalue"}.

Writes crates/metrics/tests/fixtures/mcnemar.json. Run with the pinned .venv-ref (scripts/reference/setup.sh).
"""
import random

from statsmodels.stats.contingency_tables import mcnemar

from refcommon import Cases


def call(**kw):
    r = mcnemar(**kw)
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue)}


def main():
    c = Cases("mcnemar", "scripts/reference/gen_mcnemar.py", ["statsmodels", "scipy", "numpy"])
    fixed = [(0, 0), (0, 1), (1, 0), (1, 1), (3, 7), (7, 3), (10, 10), (0, 25), (25, 0), (12, 30),
             (101, 80), (500, 530), (2000, 1900), (0, 2000), (40000, 41000)]
    for i, (b, cc) in enumerate(fixed):
        c.add(f"fixed_{i}", "mcnemar", call, dict(table=[[50, b], [cc, 60]], exact=True))
    rng = random.Random(7)
    for i in range(60):
        n = rng.choice([5, 50, 500, 5000])
        b, cc = rng.randint(0, n), rng.randint(0, n)
        table = [[rng.randint(0, n), b], [cc, rng.randint(0, n)]]
        kw = dict(table=table, exact=True)
        if i % 3 == 0:
            kw["correction"] = bool(i % 2)
        c.add(f"random_{i}", "mcnemar", call, kw)
    c.write()


if __name__ == "__main__":
    main()
