"""Reads the TensorBoard event files of a finetune run with the `tensorboard` package's own reader and checks
them against the run's trainer_state.json: every logged number appears as the scalar HF's TensorBoardCallback
would write (`train/loss`, `train/learning_rate`, `eval/accuracy`, ...), at the same step, equal in float32.

    scripts/reference/setup.sh tensorboard
    .venv-tb/bin/python scripts/reference/check_tensorboard.py OUTPUT_DIR
"""
import glob
import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def hf_tag(k):
    for p in ("eval_", "test_"):
        if k.startswith(p):
            return p[:-1] + "/" + k[len(p):]
    return "train/" + k


def main(out):
    dirs = glob.glob(os.path.join(out, "runs", "*"))
    assert len(dirs) == 1, f"expected one run directory under {out}/runs, found {dirs}"
    ea = EventAccumulator(dirs[0], size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    state = json.load(open(os.path.join(out, "trainer_state.json")))
    expected = {}
    for entry in state["log_history"]:
        step = entry["step"]
        for k, v in entry.items():
            if k != "step" and isinstance(v, (int, float)):
                expected.setdefault(hf_tag(k), []).append((step, np.float32(v)))
    missing = sorted(set(expected) - tags)
    assert not missing, f"tags missing from the event file: {missing}"
    n = 0
    for tag, points in expected.items():
        got = [(e.step, np.float32(e.value)) for e in ea.Scalars(tag)]
        assert got == points, f"{tag}: {got} != {points}"
        n += len(points)
    print(f"{dirs[0]}: {len(expected)} scalar tags, {n} values read by tensorboard {__import__('tensorboard').__version__} "
          f"equal trainer_state.json (float32)")
    print("tags:", " ".join(sorted(tags)))


if __name__ == "__main__":
    main(sys.argv[1])
