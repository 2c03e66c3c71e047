"""Reference fixtures for LoRA on the Llama-family decoders (PEFT `get_peft_model`): the tiny Llama (GQA, tied
embeddings) and tiny Qwen2 (q/k/v biases, separate head) of gen_tiny_decoders.py with r=4, lora_alpha=8 adapters
on all seven linears (plus an rsLoRA case on a subset, and GPT-2 with adapters on its Conv1D layers), lora_B perturbed to non-zero values so that gradients
reach lora_A. Records logits, loss, every lora_A/lora_B gradient, the adapters after three AdamW steps (warmup
and clipping as the decoder fixtures), the frozen base after the steps, and the base weights after
`merge_and_unload()` of the saved adapter. The adapter itself is written with PEFT's `save_pretrained`, so the
tests read PEFT's own `adapter_config.json` and `adapter_model.safetensors`.

Run with the pinned torch venv (scripts/reference/requirements-torch.txt):
    /work/main/.venv-torch/bin/python scripts/reference/gen_tiny_lora.py
Reads crates/models/tests/fixtures/tiny_{llama,qwen2,gpt2}/ (written by gen_tiny_decoders.py) and writes
crates/models/tests/fixtures/tiny_lora_{llama,qwen2,llama_rslora,gpt2}/{adapter_config.json,
adapter_model.safetensors, expected.safetensors}.
"""

import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, get_linear_schedule_with_warmup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tiny_decoders import LR, ROOT, STEPS, WEIGHT_DECAY, decays  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base(src):
    config = AutoConfig.from_pretrained(os.path.join(ROOT, src))
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config)
    state = load_file(os.path.join(ROOT, src, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied lm_head is not stored separately.
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    return model


def ours(name):
    # PEFT's parameter name -> this project's (the transformers name plus .lora_A.weight / .lora_B.weight).
    return name.removeprefix("base_model.model.").replace(".default", "")


def write(name, src, targets, use_rslora=False):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(8765)
    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM",
                     use_rslora=use_rslora)
    model = get_peft_model(base(src), cfg)
    # A relative name instead of the generating machine's path.
    model.peft_config["default"].base_model_name_or_path = src
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))  # PEFT's model-card template, not needed by the tests
    # PEFT writes target_modules from a set, in hash order: sort it so that reruns give identical files.
    path = os.path.join(out, "adapter_config.json")
    with open(path) as f:
        saved = json.load(f)
    saved["target_modules"] = sorted(saved["target_modules"])
    with open(path, "w") as f:
        f.write(json.dumps(saved, indent=2, sort_keys=True))

    ref = load_file(os.path.join(ROOT, src, "expected.safetensors"))
    inputs = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    labels = ref["labels"]
    expected = dict(inputs)
    expected["labels"] = labels
    res = model(**inputs, labels=labels)
    res.loss.backward()
    expected["logits"] = res.logits.detach().clone()
    expected["loss"] = res.loss.detach().reshape(1).clone()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n, _ in trainable)
    for pname, p in trainable:
        expected["grad." + ours(pname)] = p.grad.detach().clone()

    # Hugging Face Trainer's groups: LoRA weights are decayed (their names end in "weight", not bias/norm).
    groups = [
        {"params": [p for n, p in trainable if decays(ours(n))], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in trainable if not decays(ours(n))], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6)
    lrs, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    expected["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    for pname, p in trainable:
        expected["step3." + ours(pname)] = p.detach().clone()

    # The saved (untrained) adapter, loaded back by PEFT and merged into a fresh base.
    merged = PeftModel.from_pretrained(base(src), out).merge_and_unload()
    for pname, p in merged.named_parameters():
        expected["merged." + pname] = p.detach().clone()
    expected["merged_logits"] = merged(**inputs).logits.detach().clone()
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    print(name, "loss", res.loss.item(), "lrs", lrs, "norms", norms)


CASES = {
    "tiny_lora_llama": ("tiny_llama", ALL, False),
    "tiny_lora_qwen2": ("tiny_qwen2", ALL, False),
    "tiny_lora_llama_rslora": ("tiny_llama", ["q_proj", "v_proj", "up_proj"], True),
    # GPT-2's Conv1D layers: PEFT sets fan_in_fan_out; "c_proj" selects both attn.c_proj and mlp.c_proj.
    "tiny_lora_gpt2": ("tiny_gpt2", ["c_attn", "c_proj", "c_fc"], False),
}

if __name__ == "__main__":
    # Optional arguments: the cases to (re)write; all by default.
    for name in sys.argv[1:] or CASES:
        src, targets, rslora = CASES[name]
        write(name, src, targets, use_rslora=rslora)
