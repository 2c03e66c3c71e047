"""Reference fixtures for the Llama-family decoders (causal LM): a tiny random model, one right-padded batch
with -100 labels, its logits, loss, every parameter gradient, and the parameters after three AdamW steps with
warmup and gradient clipping.

Run with the pinned torch venv (scripts/reference/requirements-torch.txt):
    /work/main/.venv-torch/bin/python scripts/reference/gen_tiny_decoders.py
Writes crates/models/tests/fixtures/tiny_{llama,qwen2,gpt2,llama3,phi}/{config.json, model.safetensors,
expected.safetensors}; with names as arguments (e.g. `phi`), only those.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
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
    labels = torch.where(attention_mask == 1, input_ids, torch.full_like(input_ids, -100))
    # A masked prompt (as in instruction tuning) on the first row.
    labels[0, :3] = -100
    return input_ids, attention_mask, labels


def decays(name):
    # Hugging Face Trainer: no weight decay on biases and normalisation weights (GPT-2: ln_1, ln_2, ln_f).
    return not (name.endswith("bias") or "norm" in name or ".ln_" in name)


def perturb(model, gen):
    # The default init (std 0.02, norms = 1) makes gradients tiny and hides mistakes; use O(0.1-1) values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name or (".ln_" in name and name.endswith("weight")):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


def write(name, model, pad):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(4321)
    config = model.config
    perturb(model, gen)
    model.eval()
    # named_parameters lists a tied lm_head once, as model.embed_tokens.weight.
    params = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
    save_file(params, os.path.join(out, "model.safetensors"))
    config.to_json_file(os.path.join(out, "config.json"))

    input_ids, attention_mask, labels = batch(config.vocab_size, pad, gen)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    expected = dict(inputs)
    expected["labels"] = labels
    res = model(**inputs, labels=labels)
    res.loss.backward()
    expected["logits"] = res.logits.detach().clone()
    expected["loss"] = res.loss.detach().reshape(1).clone()
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().clone()

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
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    hidden_act="silu",
    max_position_embeddings=64,
)


def write_llama():
    config = LlamaConfig(**SHAPE, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, pad_token_id=0)
    config._attn_implementation = "eager"
    write("tiny_llama", LlamaForCausalLM(config), pad=0)


def write_llama3_rope():
    # Llama 3.1-style rope scaling; original_max_position_embeddings is small so that the tiny head_dim has
    # frequencies in all three bands (kept, interpolated, divided by factor).
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    config = LlamaConfig(**SHAPE, rms_norm_eps=1e-5, rope_parameters=rope, tie_word_embeddings=True,
                         attention_bias=True, pad_token_id=0)
    config._attn_implementation = "eager"
    write("tiny_llama3", LlamaForCausalLM(config), pad=0)


def write_qwen2():
    config = Qwen2Config(**SHAPE, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False, pad_token_id=0)
    config._attn_implementation = "eager"
    write("tiny_qwen2", Qwen2ForCausalLM(config), pad=0)


def write_gpt2():
    config = GPT2Config(
        vocab_size=128,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=64,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    write("tiny_gpt2", GPT2LMHeadModel(config), pad=0)


def write_phi():
    # Phi's parallel block, a partial rotary embedding (half of each 8-wide head), grouped k/v heads and the LM
    # head's bias.
    config = PhiConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="gelu_new",
        max_position_embeddings=64,
        layer_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    write("tiny_phi", PhiForCausalLM(config), pad=0)


WRITERS = {"llama": write_llama, "qwen2": write_qwen2, "llama3": write_llama3_rope, "gpt2": write_gpt2, "phi": write_phi}

if __name__ == "__main__":
    for name in sys.argv[1:] or WRITERS:
        # Each model from its own seed, so that one can be written alone.
        torch.manual_seed(0)
        WRITERS[name]()
