"""Reference fixture for the classification heads' loss options: `torch.nn.CrossEntropyLoss(weight=...,
label_smoothing=...)` on the logits of the tiny random BERT fixtures (sequence and token classification), with
the loss and two parameter gradients. The Trainer's LabelSmoother gives the same value as `label_smoothing`.

    .venv-torch/bin/python scripts/reference/gen_weighted_ce.py
Writes crates/models/tests/fixtures/tiny_bert{,_token}/weighted_ce.safetensors.
"""

import os

import torch
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification, BertForTokenClassification

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "models", "tests", "fixtures")
GRADS = ["classifier.weight", "bert.encoder.layer.0.intermediate.dense.weight"]


def write(name, cls):
    d = os.path.join(ROOT, name)
    model = cls.from_pretrained(d)
    model.eval()  # dropout off, as the fixture's forward
    e = load_file(os.path.join(d, "expected.safetensors"))
    inputs = {k: e[k] for k in ["input_ids", "attention_mask", "token_type_ids"] if k in e}
    labels = e["labels"]
    n = model.config.num_labels
    weight = torch.linspace(0.5, 2.0, n)
    out = {"weight": weight}
    for tag, kw in [("w", {"weight": weight}), ("ls", {"label_smoothing": 0.1}),
                    ("wls", {"weight": weight, "label_smoothing": 0.2})]:
        model.zero_grad()
        logits = model(**inputs).logits
        loss = torch.nn.CrossEntropyLoss(**kw)(logits.reshape(-1, n), labels.reshape(-1))
        loss.backward()
        out[f"{tag}.loss"] = loss.detach().reshape(1).clone()
        for p in GRADS:
            out[f"{tag}.grad.{p}"] = dict(model.named_parameters())[p].grad.detach().clone()
        print(name, tag, loss.item())
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(d, "weighted_ce.safetensors"))


write("tiny_bert", BertForSequenceClassification)
write("tiny_bert_token", BertForTokenClassification)
