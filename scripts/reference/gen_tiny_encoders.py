"""Reference fixtures for the BERT-family encoders: a tiny random model, one padded batch, its logits, loss,
every parameter gradient, and the parameters after three AdamW steps with warmup and gradient clipping.

Run with the pinned torch venv (scripts/reference/requirements-torch.txt):
    /work/main/.venv-torch/bin/python scripts/reference/gen_tiny_encoders.py
Writes crates/models/tests/fixtures/tiny_{bert,roberta,distilbert}/{config.json, model.safetensors, expected.safetensors}
(sequence classification) and tiny_bert_token/ (token classification: labels per token, −100 on [CLS], [SEP]
and padding).
"""

import os

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    get_linear_schedule_with_warmup,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "models", "tests", "fixtures")
STEPS = 3
LR = 1e-3
WEIGHT_DECAY = 0.01


def batch(vocab, pad, gen):
    lengths = [9, 6, 4]
    b, t = len(lengths), max(lengths)
    input_ids = torch.randint(2, vocab, (b, t), generator=gen)
    attention_mask = torch.zeros(b, t, dtype=torch.int64)
    for i, n in enumerate(lengths):
        attention_mask[i, :n] = 1
    input_ids = torch.where(attention_mask == 1, input_ids, torch.full_like(input_ids, pad))
    token_type_ids = torch.zeros(b, t, dtype=torch.int64)
    token_type_ids[0, 5:] = 1
    token_type_ids[1, 3:6] = 1
    labels = torch.tensor([0, 2, 1])
    return input_ids, attention_mask, token_type_ids, labels


def decays(name):
    # Hugging Face Trainer: no weight decay on biases and LayerNorm parameters.
    return not (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name)


def perturb(model, gen):
    # The default init (std 0.02, LayerNorm = identity) makes gradients tiny and hides mistakes in biases and
    # LayerNorm parameters; give every parameter O(0.1–1) random values instead.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "LayerNorm.weight" in name or "layer_norm.weight" in name:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


def token_labels(attention_mask, num_labels):
    # One label per token; [CLS] (first), [SEP] (last real token) and padding are ignored (−100), as a
    # tokenizer-aligned NER batch has them.
    gen = torch.Generator().manual_seed(4321)
    labels = torch.randint(0, num_labels, attention_mask.shape, generator=gen)
    labels[attention_mask == 0] = -100
    labels[:, 0] = -100
    for i, n in enumerate(attention_mask.sum(dim=1).tolist()):
        labels[i, n - 1] = -100
    return labels


def write(name, model, pad, use_token_types, per_token=False):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    config = model.config
    perturb(model, gen)
    model.eval()  # dropout off: the reference is deterministic
    params = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
    save_file(params, os.path.join(out, "model.safetensors"))
    config.to_json_file(os.path.join(out, "config.json"))

    input_ids, attention_mask, token_type_ids, labels = batch(config.vocab_size, pad, gen)
    if per_token:
        labels = token_labels(attention_mask, config.num_labels)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if use_token_types:
        inputs["token_type_ids"] = token_type_ids
    expected = dict(inputs)
    expected["labels"] = labels
    res = model(**inputs, labels=labels)
    res.loss.backward()
    expected["logits"] = res.logits.detach().clone()
    expected["loss"] = res.loss.detach().reshape(1).clone()
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().clone()

    if name == "tiny_bert":
        # The other heads' losses: BCE with logits (multi-label) and MSE (regression), on the same logits.
        float_labels = torch.rand(labels.shape[0], config.num_labels, generator=gen)
        for problem in ["multi_label_classification", "regression"]:
            model.config.problem_type = problem
            model.zero_grad()
            target = (float_labels > 0.5).float() if problem == "multi_label_classification" else float_labels
            loss = model(**inputs, labels=target).loss
            loss.backward()
            expected[problem + ".labels"] = target
            expected[problem + ".loss"] = loss.detach().reshape(1).clone()
            for pname in ["classifier.weight", "bert.encoder.layer.0.intermediate.dense.weight"]:
                expected[problem + ".grad." + pname] = dict(model.named_parameters())[pname].grad.detach().clone()
        model.config.problem_type = "single_label_classification"

    groups = [
        {"params": [p for n, p in model.named_parameters() if decays(n)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in model.named_parameters() if not decays(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6)
    lrs, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    expected["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    for pname, p in model.named_parameters():
        expected["step3." + pname] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    print(name, "loss", res.loss.item(), "lrs", lrs, "norms", norms)


SHAPE = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    num_labels=3,
)


def write_bert():
    config = BertConfig(**SHAPE, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    config._attn_implementation = "eager"
    write("tiny_bert", BertForSequenceClassification(config), pad=0, use_token_types=True)


def write_roberta():
    # RoBERTa: positions start after padding_idx (so max_position_embeddings = max length + 2), one token type.
    config = RobertaConfig(**SHAPE, max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
    config._attn_implementation = "eager"
    write("tiny_roberta", RobertaForSequenceClassification(config), pad=1, use_token_types=False)


def write_distilbert():
    config = DistilBertConfig(
        vocab_size=99,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        activation="gelu",
        max_position_embeddings=64,
        num_labels=3,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    write("tiny_distilbert", DistilBertForSequenceClassification(config), pad=0, use_token_types=False)


def write_bert_token():
    config = BertConfig(
        **dict(SHAPE, num_labels=5),
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    write("tiny_bert_token", BertForTokenClassification(config), pad=0, use_token_types=True, per_token=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    write_bert()
    write_roberta()
    write_distilbert()
    write_bert_token()
