"""Reference fixtures for the masked-LM heads (`BertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`):
a tiny random model with its decoder tied to the word embeddings, one padded batch masked as
`DataCollatorForLanguageModeling` masks it (labels −100 except at masked positions), the logits of every token
without labels, the loss and every parameter gradient with labels, and the parameters after three AdamW steps.

Run with the pinned torch venv (scripts/reference/requirements-torch.txt):
    .venv-torch/bin/python scripts/reference/gen_tiny_mlm.py
Writes crates/models/tests/fixtures/tiny_{bert,roberta,distilbert}_mlm/{config.json, model.safetensors,
expected.safetensors}.
"""

import os

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "models", "tests", "fixtures")
LR = 1e-3
WEIGHT_DECAY = 0.01
MASK_ID = 3


def decays(name):
    return not (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name)


def perturb(model, gen):
    # O(0.1–1) values everywhere so that mistakes in biases and LayerNorm parameters show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


def batch(vocab, pad, gen):
    lengths = [9, 6, 4]
    b, t = len(lengths), max(lengths)
    ids = torch.randint(4, vocab, (b, t), generator=gen)
    mask = torch.zeros(b, t, dtype=torch.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = torch.where(mask == 1, ids, torch.full_like(ids, pad))
    # Masked positions (never padding), as the collator leaves them: most replaced by the mask token, one by a
    # random token, one left as it was.
    labels = torch.full_like(ids, -100)
    inputs = ids.clone()
    for i, j, how in [(0, 1, "mask"), (0, 4, "mask"), (0, 7, "random"), (1, 2, "keep"), (1, 4, "mask"), (2, 1, "mask")]:
        labels[i, j] = ids[i, j]
        if how == "mask":
            inputs[i, j] = MASK_ID
        elif how == "random":
            inputs[i, j] = (ids[i, j] + 5) % vocab
    return inputs, mask, labels


def write(name, model, pad, use_token_types):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(2024)
    config = model.config
    perturb(model, gen)
    model.eval()
    # named_parameters lists a tied parameter once: the decoder weight under the word embeddings' name.
    params = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
    save_file(params, os.path.join(out, "model.safetensors"))
    config.to_json_file(os.path.join(out, "config.json"))

    input_ids, attention_mask, labels = batch(config.vocab_size, pad, gen)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if use_token_types:
        tt = torch.zeros_like(input_ids)
        tt[0, 5:] = 1
        inputs["token_type_ids"] = tt
    expected = dict(inputs)
    expected["labels"] = labels
    with torch.no_grad():
        expected["logits"] = model(**inputs).logits.detach().clone()
    res = model(**inputs, labels=labels)
    res.loss.backward()
    expected["loss"] = res.loss.detach().reshape(1).clone()
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().clone()

    groups = [
        {"params": [p for n, p in model.named_parameters() if decays(n)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in model.named_parameters() if not decays(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR)
    for _ in range(3):
        opt.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    for pname, p in model.named_parameters():
        expected["step3." + pname] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    print(name, "loss", res.loss.item(), "params", sorted(params))


SHAPE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

if __name__ == "__main__":
    torch.manual_seed(0)
    cfg = BertConfig(**SHAPE, max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    cfg._attn_implementation = "eager"
    write("tiny_bert_mlm", BertForMaskedLM(cfg), pad=0, use_token_types=True)
    cfg = RobertaConfig(**SHAPE, max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
    cfg._attn_implementation = "eager"
    write("tiny_roberta_mlm", RobertaForMaskedLM(cfg), pad=1, use_token_types=False)
    cfg = DistilBertConfig(
        vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, pad_token_id=0
    )
    cfg._attn_implementation = "eager"
    write("tiny_distilbert_mlm", DistilBertForMaskedLM(cfg), pad=0, use_token_types=False)
