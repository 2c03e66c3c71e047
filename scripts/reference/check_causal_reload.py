"""Checks a decoder directory written by `finetune sft` / `finetune merge` (GPT-2 or Llama-family) against
transformers.

1. `AutoModelForCausalLM.from_pretrained(dir)` loads it with no missing or unexpected weights.
2. `finetune perplexity --json` on a text file (plain text, or JSONL whose `text` fields are joined by blank lines as
   `finetune perplexity` does) equals the sliding-window perplexity transformers computes with the same tokenizer
   (Hugging Face's perplexity guide), and greedy `generate` of a prompt gives the same text.

Usage (versions pinned in requirements-torch.txt / constraints-torch.txt):
    python scripts/reference/check_causal_reload.py --model DIR --text FILE --finetune target/release/finetune \
        [--max-length 256 --stride 128]
Window defaults: the model's n_positions / max_position_embeddings, capped at 1024, with stride = max_length.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_window_perplexity import guide  # noqa: E402  (the perplexity guide's loop)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--finetune", required=True, help="path of the built finetune binary")
    ap.add_argument("--prompt", default="Greet anna.")
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--stride", type=int)
    args = ap.parse_args()

    model, info = AutoModelForCausalLM.from_pretrained(args.model, output_loading_info=True, dtype=torch.float32)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading info: {bad}"
    tok = AutoTokenizer.from_pretrained(args.model)
    cfg = model.config
    max_length = args.max_length or min(getattr(cfg, "n_positions", None) or cfg.max_position_embeddings, 1024)
    stride = args.stride or max_length

    text = open(args.text, encoding="utf-8").read()
    if args.text.endswith((".jsonl", ".json")):
        text = "\n\n".join(json.loads(line)["text"] for line in text.splitlines() if line.strip())
    # `finetune perplexity` adds BOS only when the tokenizer config asks for it (add_bos_token), as encode does.
    bos = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None else []
    ids = torch.tensor([bos + tok(text, add_special_tokens=False)["input_ids"]])
    want = guide(model, ids, max_length, stride)[1]
    out = subprocess.run(
        [args.finetune, "perplexity", "--model", args.model, "--data", args.text, "--json",
         "--max-length", str(max_length), "--stride", str(stride)],
        check=True, capture_output=True, text=True,
    )
    got = json.loads(out.stdout)["perplexity"]
    print(f"perplexity: transformers {want:.6f}, finetune {got:.6f}, |Δ log ppl| = {abs(math.log(got) - math.log(want)):.2e}")

    prompt = torch.tensor([tok(args.prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(prompt).logits[0]
        gen = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    want_text = tok.decode(gen[0, prompt.size(1):], skip_special_tokens=True).strip()
    with tempfile.TemporaryDirectory() as tmp:
        data, preds = os.path.join(tmp, "p.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            f.write(json.dumps({"prompt": args.prompt, "completion": ""}) + "\n")
        subprocess.run(
            [args.finetune, "generate", "--model", args.model, "--data", data, "--out", preds,
             "--use-chat-template", "false", "--max-new-tokens", "6"],
            check=True, capture_output=True, text=True,
        )
        with open(preds, encoding="utf-8") as f:
            got_text = json.loads(f.readline())["prediction"]
    print(f"greedy: transformers {want_text!r}, finetune {got_text!r}")
    print("last-token logits (first 5):", [round(x, 6) for x in logits[-1, :5].tolist()])
    assert got_text == want_text, "greedy generations differ"
    assert abs(math.log(got) - math.log(want)) < 1e-5, "perplexities differ"


if __name__ == "__main__":
    main()
