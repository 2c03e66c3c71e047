"""Reference fixtures for KV-cache generation and the logits processors (transformers 5.23.0, torch 2.15.0).

Writes crates/models/tests/fixtures/generate/{tiny_llama,tiny_qwen2,tiny_phi}.safetensors (left-padded prompts, the greedy
tokens of `model.generate(do_sample=False)` and the logits of its prefill step) and processors.safetensors
(outputs of RepetitionPenalty, Temperature, TopK and TopP processors on random logits, alone and chained in
generate's order).

Run from the repository root: /work/main/.venv-torch/bin/python scripts/reference/gen_generate.py [NAME ...]
(names: tiny_llama, tiny_qwen2, tiny_phi, processors; all by default).
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "..", "..", "crates", "models", "tests", "fixtures")
OUT = os.path.join(FIX, "generate")
MAX_NEW = 10
PAD = 0


def prompts(vocab, gen):
    lengths = [7, 3, 5]
    t = max(lengths)
    ids = torch.full((len(lengths), t), PAD, dtype=torch.int64)
    mask = torch.zeros((len(lengths), t), dtype=torch.int64)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = torch.randint(3, vocab, (n,), generator=gen)
        mask[i, t - n:] = 1
    return ids, mask


def write_model(name, seed):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FIX, name), dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    ids, mask = prompts(model.config.vocab_size, gen)
    t = ids.shape[1]
    kw = dict(attention_mask=mask, do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=PAD,
              return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        # Without an EOS first; then the third token of row 1 becomes the EOS, so that row stops early.
        free = model.generate(ids, eos_token_id=None, **kw)
        eos = int(free.sequences[1, t + 2])
        out = model.generate(ids, eos_token_id=eos, **kw)
    tensors = {
        "input_ids": ids,
        "attention_mask": mask,
        "eos_token_id": torch.tensor([eos]),
        "generated": out.sequences[:, t:].contiguous(),
        "generated_no_eos": free.sequences[:, t:].contiguous(),
        "prefill_logits": out.logits[0].float().contiguous(),
    }
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))


def write_processors():
    gen = torch.Generator().manual_seed(7)
    rows, vocab = 4, 50
    scores = torch.randn((rows, vocab), generator=gen) * 3
    ids = torch.randint(0, vocab, (rows, 12), generator=gen)
    t = {"scores": scores, "input_ids": ids}
    t["repetition_penalty_1.3"] = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    t["temperature_0.7"] = TemperatureLogitsWarper(0.7)(ids, scores.clone())
    t["top_k_5"] = TopKLogitsWarper(5)(ids, scores.clone())
    t["top_p_0.8"] = TopPLogitsWarper(0.8)(ids, scores.clone())
    t["top_p_0.01"] = TopPLogitsWarper(0.01)(ids, scores.clone())
    x = RepetitionPenaltyLogitsProcessor(1.2)(ids, scores.clone())
    x = TemperatureLogitsWarper(0.8)(ids, x)
    x = TopKLogitsWarper(10)(ids, x)
    t["chain"] = TopPLogitsWarper(0.9)(ids, x)
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(OUT, "processors.safetensors"))


WRITERS = {
    "tiny_llama": lambda: write_model("tiny_llama", 1),
    "tiny_qwen2": lambda: write_model("tiny_qwen2", 2),
    "tiny_phi": lambda: write_model("tiny_phi", 3),
    "processors": write_processors,
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name in sys.argv[1:] or WRITERS:
        WRITERS[name]()
