"""Checks a GPT-2 directory written by `finetune sft` / `finetune merge` against transformers.

1. `GPT2LMHeadModel.from_pretrained(dir)` loads it with no missing or unexpected weights (lm_head tied to wte).
2. `finetune perplexity --json` on a text file equals the sliding-window perplexity transformers computes with the
   same tokenizer (Hugging Face's perplexity guide), and greedy `generate` of a prompt gives the same tokens.

Usage (versions pinned in requirements-torch.txt / constraints-torch.txt):
    python scripts/reference/check_gpt2_reload.py --model DIR --text FILE.txt --finetune target/debug/finetune
"""

import argparse
import json
import math
import os
import subprocess
import tempfile

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel


def hf_perplexity(model, ids, max_length, stride):
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    seq_len = ids.size(1)
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_valid = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid - 1
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--finetune", required=True, help="path of the built finetune binary")
    ap.add_argument("--prompt", default="Greet anna.")
    args = ap.parse_args()

    model, info = GPT2LMHeadModel.from_pretrained(args.model, output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading info: {bad}"
    tok = AutoTokenizer.from_pretrained(args.model)
    n_pos = model.config.n_positions

    text = open(args.text, encoding="utf-8").read()
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    want = hf_perplexity(model, ids, n_pos, n_pos)
    out = subprocess.run(
        [args.finetune, "perplexity", "--model", args.model, "--data", args.text, "--json",
         "--max-length", str(n_pos), "--stride", str(n_pos)],
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
