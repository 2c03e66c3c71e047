"""Writes crates/train/tests/fixtures/hyperband.json: Optuna's HyperbandPruner brackets (how many, the trial
budget of each) and the bracket of trials 0..199, for several resources, reduction factors and study names; for
crates/train/tests/hyperband.rs.

    python3 -m venv .venv-optuna && .venv-optuna/bin/pip install optuna==4.5.0 numpy==2.3.3
    .venv-optuna/bin/python scripts/reference/gen_hyperband.py
"""

import json
from pathlib import Path

import optuna
from optuna.pruners import HyperbandPruner

OUT = Path(__file__).resolve().parents[2] / "crates" / "train" / "tests" / "fixtures" / "hyperband.json"
CASES = [
    ("sweep", 1, 27, 3),
    ("sweep", 1, 100, 3),
    ("sweep", 10, 265, 3),
    ("sentiment", 20, 530, 2),
    ("my-study", 1, 81, 4),
    ("sweep", 5, 6, 3),
]


def main():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {"optuna": optuna.__version__, "cases": []}
    for name, lo, hi, rf in CASES:
        pruner = HyperbandPruner(min_resource=lo, max_resource=hi, reduction_factor=rf)
        study = optuna.create_study(study_name=name, pruner=pruner)
        pruner._try_initialization(study)
        brackets = []
        for _ in range(200):
            trial = study.ask()
            brackets.append(pruner._get_bracket_id(study, trial))
        out["cases"].append({
            "study_name": name, "min_resource": lo, "max_resource": hi, "reduction_factor": rf,
            "n_brackets": pruner._n_brackets, "budgets": pruner._trial_allocation_budgets, "brackets": brackets,
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
