"""Reference learning rates for finetune-train's schedules, from transformers' own schedulers.

Records, for each config, the learning rate in effect at every optimizer step (what Trainer logs as
`learning_rate`: the scheduler's last LR before `scheduler.step()`), plus the warmup step count from
`TrainingArguments.get_warmup_steps`. Run with the torch venv:
    /work/main/.venv-torch/bin/python scripts/reference/gen_schedules.py
"""

import json
import os

import torch
import transformers
from transformers import TrainingArguments, get_scheduler

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "train", "tests", "fixtures", "schedules.json")

CONFIGS = []
for sched in ["linear", "cosine", "constant", "constant_with_warmup"]:
    for total in [1, 2, 7, 10, 100, 333]:
        for warmup in [0, 1, 3, 0.1, 0.25, 0.5, 0.999]:
            CONFIGS.append((sched, total, warmup))
# Warmup longer than training, and more steps recorded than planned (multiplier clamps at 0).
CONFIGS += [("linear", 10, 20), ("cosine", 10, 20), ("constant_with_warmup", 10, 20)]

cases = []
for sched, total, warmup in CONFIGS:
    lr = 5e-5
    args = TrainingArguments(output_dir="/tmp/gen_schedules_unused", warmup_steps=warmup, report_to="none")
    num_warmup = args.get_warmup_steps(total)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr)
    s = get_scheduler(sched, opt, num_warmup_steps=num_warmup, num_training_steps=total)
    lrs = []
    for _ in range(total + 3):
        lrs.append(s.get_last_lr()[0])
        opt.step()
        s.step()
    cases.append(
        {
            "scheduler": sched,
            "num_training_steps": total,
            "warmup_steps": warmup,
            "learning_rate": lr,
            "num_warmup_steps": num_warmup,
            "lrs": lrs,
        }
    )

with open(OUT, "w") as f:
    json.dump(
        {"generator": "scripts/reference/gen_schedules.py", "transformers": transformers.__version__,
         "torch": torch.__version__, "cases": cases},
        f,
        indent=1,
    )
print(f"{len(cases)} cases -> {OUT}")
