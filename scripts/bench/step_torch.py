"""PyTorch baseline for scripts/bench/step.sh: the same MiniLM-shaped BERT, batch and step as
crates/models/examples/bench_step.rs (forward only in eval/no_grad; train step = forward with dropout +
cross-entropy + backward + clip_grad_norm_(1.0) + AdamW), median over timed steps after warm-up, peak RSS.
--bf16: forward (and loss) under torch.autocast("cpu", dtype=torch.bfloat16), as HF Trainer's bf16=True does;
backward, clipping and AdamW outside it, on the f32 master weights."""

import contextlib

import argparse
import resource
import statistics
import time

import torch
from transformers import BertConfig, BertForSequenceClassification


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=a.layers,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=2,
    )
    model = BertForSequenceClassification(cfg)
    b, t = a.batch, a.seq
    ids = (1000 + (torch.arange(b * t) * 7919) % 29000).reshape(b, t)
    mask = torch.ones(b, t, dtype=torch.int64)
    tt = torch.zeros(b, t, dtype=torch.int64)
    labels = torch.arange(b) % 2
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=2e-5)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()

    model.eval()
    fwd = []
    with torch.no_grad():
        for i in range(a.warmup + a.steps):
            s = time.perf_counter()
            with autocast():
                model(input_ids=ids, attention_mask=mask, token_type_ids=tt)
            if i >= a.warmup:
                fwd.append((time.perf_counter() - s) * 1e3)

    model.train()
    steps = []
    loss = None
    cpu_start = 0.0
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            cpu_start = time.process_time()
        s = time.perf_counter()
        opt.zero_grad()
        with autocast():
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= a.warmup:
            steps.append((time.perf_counter() - s) * 1e3)

    print(f"torch {torch.__version__}, attn {model.config._attn_implementation}, {a.threads} threads")
    print(f"torch precision {'bf16 autocast' if a.bf16 else 'f32'}")
    print(f"torch forward_ms {statistics.median(fwd):.1f}")
    cpu_per_step = (time.process_time() - cpu_start) / a.steps * 1e3
    print(f"torch step_ms {statistics.median(steps):.1f}")
    print(f"torch forward_min_ms {min(fwd):.1f}")
    print(f"torch step_min_ms {min(steps):.1f}")
    print(f"torch step_cpu_ms {cpu_per_step:.1f}")
    print(f"torch last_loss {loss.item():.4f}")
    print(f"torch peak_rss_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
