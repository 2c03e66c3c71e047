"""Reference for sliding-window perplexity: the loop of Hugging Face's perplexity guide
(transformers docs/source/en/perplexity.md), run on the tiny random decoders of gen_tiny_decoders.py over one
random token stream, for several (max_length, stride) pairs.

Run with the pinned torch venv (scripts/reference/requirements-torch.txt):
    /work/main/.venv-torch/bin/python scripts/reference/gen_window_perplexity.py
Writes crates/train/tests/fixtures/window_perplexity.json.
"""

import json
import os

import torch
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "..", "crates", "models", "tests", "fixtures")
OUT = os.path.join(HERE, "..", "..", "crates", "train", "tests", "fixtures", "window_perplexity.json")


def guide(model, encodings, max_length, stride):
    # Verbatim logic of the guide, batch size 1.
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return float(avg_nll), float(torch.exp(avg_nll)), int(n_tokens)


def main():
    gen = torch.Generator().manual_seed(77)
    cases = []
    for name in ["tiny_llama", "tiny_qwen2"]:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), attn_implementation="eager")
        model.eval()
        ids = torch.randint(1, model.config.vocab_size, (1, 53), generator=gen)
        for max_length, stride in [(16, 16), (16, 8), (16, 5), (20, 1), (64, 64), (7, 3)]:
            loss, ppl, n = guide(model, ids, max_length, stride)
            cases.append({"model": name, "input_ids": ids[0].tolist(), "max_length": max_length, "stride": stride,
                          "loss": loss, "perplexity": ppl, "num_tokens": n})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/reference/gen_window_perplexity.py", "torch": torch.__version__,
                   "cases": cases}, f, indent=1)
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
