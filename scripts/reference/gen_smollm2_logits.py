"""Reference logits and losses of the real SmolLM2-135M-Instruct (Q4_1 GGUF) from transformers' own GGUF loading.

Run with the pinned torch venv (transformers 5.23.0, torch 2.15.0, gguf 0.19.0) after scripts/fetch.sh:
    /work/main/.venv-torch/bin/python scripts/reference/gen_smollm2_logits.py
Writes crates/models/tests/fixtures/smollm2/:
- cases.json: per case its texts (the chat case: the messages and the prompt transformers' chat template renders),
  transformers' token ids, padding side and pad id, and the losses as Python floats.
- logits.safetensors: per case `<case>.input_ids` / `.attention_mask` (i64 [B, T]), `.last_logits` (f32 [B, V],
  the full vocabulary row at each sequence's last real token), `.top_ids` / `.top_values` (i64 / f32 [B, T, 20],
  transformers' 20 largest logits at every position, padding included) and `.loss` (f64 [1], labels = input_ids;
  the padded case also `.loss_masked`, labels = input_ids with padding set to -100).
Only a subset of the [B, T, V] logits is stored, to keep the fixture small.

Also, with no external file needed (so it runs in CI): tiny_gguf.safetensors + tiny_gguf.json, the same checks on
the random 2-layer fixtures/gguf/tiny_llama.gguf as transformers loads it: its token ids for a right-padded batch,
the full logits and both losses.
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "assets" / "SmolLM2-135M-Instruct"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "crates" / "models" / "tests" / "fixtures" / "smollm2"
TOP_K = 20
TINY_DIR = ROOT / "crates" / "models" / "tests" / "fixtures" / "gguf"
TINY_FILE = "tiny_llama.gguf"
TINY_TEXTS = ["Hello world the world", "<|im_start|>user\nHello<|im_end|>", "  \n\tü ✓"]

CHAT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]
CASES = [
    ("plain", ["The quick brown fox jumps over the lazy dog. It was a sunny day in 1987, and the river ran high."]),
    ("chat", None),  # filled with the rendered chat template below
    ("unicode", ["naïve café — 日本語のテキスト 🙂 Ünïcödé, emoji 🚀🚀 and tabs\tand\nnewlines."]),
    ("batch", [
        "Fine-tuning adapts a pretrained model to a new task.",
        "Short one.",
        "def add(a, b):\n    return a + b  # 42",
    ]),
]


def tiny():
    """The CI-sized twin of the SmolLM2 check: the tiny GGUF file through transformers' GGUF loader."""
    tok = AutoTokenizer.from_pretrained(str(TINY_DIR), gguf_file=TINY_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(TINY_DIR), gguf_file=TINY_FILE, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    enc = tok(TINY_TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=ids)
        masked = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({
        "input_ids": ids.to(torch.int64).contiguous(),
        "attention_mask": mask.to(torch.int64).contiguous(),
        "logits": out.logits.float().contiguous(),
        "loss": torch.tensor([out.loss.item()], dtype=torch.float64),
        "loss_masked": torch.tensor([masked.item()], dtype=torch.float64),
    }, str(OUT / "tiny_gguf.safetensors"))
    (OUT / "tiny_gguf.json").write_text(json.dumps({
        "transformers": transformers.__version__, "gguf_file": TINY_FILE, "texts": TINY_TEXTS,
        "ids": [tok(t)["input_ids"] for t in TINY_TEXTS], "pad_token_id": tok.pad_token_id,
        "loss": out.loss.item(), "loss_masked": masked.item(),
    }, indent=1, ensure_ascii=False) + "\n")
    print("tiny", tuple(ids.shape), "loss", out.loss.item(), "masked", masked.item())


def main():
    assert transformers.__version__ == "5.23.0", transformers.__version__
    tiny()
    if not (SMOL / SMOL_FILE).exists():
        sys.exit(f"{SMOL / SMOL_FILE} is missing (run scripts/fetch.sh SmolLM2-135M-Instruct)")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(SMOL), gguf_file=SMOL_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(SMOL), gguf_file=SMOL_FILE, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    chat_prompt = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"

    tensors, meta = {}, {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf_file": SMOL_FILE,
        "attn_implementation": "eager",
        "top_k": TOP_K,
        "cases": [],
    }
    for name, texts in CASES:
        if texts is None:
            texts = [chat_prompt]
        enc = tok(texts, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, labels=ids)
            logits = out.logits.float()
            masked = None
            if int(mask.min()) == 0:
                labels = ids.masked_fill(mask == 0, -100)
                masked = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        last = mask.sum(dim=1) - 1
        top = logits.topk(TOP_K, dim=-1)
        tensors[f"{name}.input_ids"] = ids.to(torch.int64).contiguous()
        tensors[f"{name}.attention_mask"] = mask.to(torch.int64).contiguous()
        tensors[f"{name}.last_logits"] = logits[torch.arange(len(texts)), last].contiguous()
        tensors[f"{name}.top_ids"] = top.indices.to(torch.int64).contiguous()
        tensors[f"{name}.top_values"] = top.values.contiguous()
        tensors[f"{name}.loss"] = torch.tensor([out.loss.item()], dtype=torch.float64)
        case = {
            "name": name,
            "texts": texts,
            "ids": [tok(t)["input_ids"] for t in texts],
            "padding_side": "right",
            "pad_token_id": tok.pad_token_id,
            "loss": out.loss.item(),
        }
        if name == "chat":
            case["messages"] = CHAT
        if masked is not None:
            tensors[f"{name}.loss_masked"] = torch.tensor([masked.item()], dtype=torch.float64)
            case["loss_masked"] = masked.item()
        meta["cases"].append(case)
        print(name, tuple(ids.shape), "loss", out.loss.item(), "masked", None if masked is None else masked.item())

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "logits.safetensors"))
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
