"""Loads an adapter saved by this project's `save_adapter` with PEFT (`PeftModel.from_pretrained`) on the tiny
Llama fixture and compares PEFT's logits with ours, then checks PEFT's `merge_and_unload` gives the same logits.
Run by hand with the pinned torch venv:

    FINETUNE_LORA_CHECK_DIR=/tmp/lora-check cargo test -p finetune-models --test lora -- --ignored
    /work/main/.venv-torch/bin/python scripts/reference/check_peft_reload.py /tmp/lora-check
"""
import os
import sys

import torch
from peft import PeftConfig, PeftModel
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tiny_lora import base  # noqa: E402


def main(adapter_dir):
    cfg = PeftConfig.from_pretrained(adapter_dir)
    print("PEFT read", type(cfg).__name__, "r", cfg.r, "alpha", cfg.lora_alpha, "rslora", cfg.use_rslora,
          "targets", sorted(cfg.target_modules))
    model = PeftModel.from_pretrained(base("tiny_llama"), adapter_dir).eval()
    ours = load_file(os.path.join(adapter_dir, "ours_logits.safetensors"))
    inputs = {"input_ids": ours["input_ids"].long(), "attention_mask": ours["attention_mask"].long()}
    # The trained adapter is non-trivial (lora_B starts at zero).
    lora_norm = sum(p.norm().item() for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        logits = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
    diff = (logits - ours["logits"]).abs().max().item()
    diff_merged = (merged - ours["logits"]).abs().max().item()
    print(f"max |PEFT logits - ours| {diff:.2e}; after merge_and_unload {diff_merged:.2e}; sum of lora_B norms {lora_norm:.3f}")
    return 0 if diff < 1e-4 and diff_merged < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
