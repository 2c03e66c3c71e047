"""PyTorch baseline for scripts/bench/decoder.sh: the real SmolLM2-135M-Instruct loaded by transformers from the
same GGUF file as crates/models/examples/bench_decoder.rs (dequantised to f32), the same batch and token pattern.

Measured, each as a median over timed steps after warm-up:
- forward_ms: the causal-LM loss (labels = input_ids) in eval mode under no_grad;
- step_ms: a full fine-tuning step (zero_grad + forward + backward + clip_grad_norm_(1.0) + AdamW, weight decay
  0.01 except biases and norm weights);
- lora_step_ms: the same step with PEFT LoRA (r=16, alpha=32, dropout 0, on q,k,v,o,gate,up,down), AdamW over
  the adapters only;
- gen_tokens_per_s: greedy `model.generate` (use_cache=True) of --new-tokens tokens for one sequence, the EOS
  stop disabled so every run produces exactly that many tokens;
- peak RSS (ru_maxrss) after the full steps (peak_rss_full_mib, comparable with ours) and at the end.

--lora-only runs only the LoRA steps in the process and prints its peak RSS (peak_rss_lora_mib). --gen-only runs
only generation: in f32, then with the weights converted to bfloat16 (gen_bf16_weights_tokens_per_s).

--bf16 runs the forward passes and steps under `torch.autocast("cpu", dtype=torch.bfloat16)` (HF Trainer's
`bf16=True`): weights, gradients and AdamW stay f32. Generation stays f32 in both modes.
"""

import contextlib

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

# transformers' GGUF loader draws its own tqdm bar; the benchmark output is read by decoder.sh.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = ROOT / "assets" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def adamw(model):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if not (n.endswith("bias") or "norm" in n)]
    no_decay = [p for n, p in params if n.endswith("bias") or "norm" in n]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=2e-5)


AUTOCAST = contextlib.nullcontext


def train_steps(model, ids, mask, warmup, steps):
    """Median ms and CPU ms per step of zero_grad + forward + backward + clipping + AdamW."""
    opt = adamw(model)
    model.train()
    times, loss, cpu_start = [], None, time.process_time()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for i in range(warmup + steps):
        if i == warmup:
            cpu_start = time.process_time()
        s = time.perf_counter()
        opt.zero_grad()
        with AUTOCAST():
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        if i >= warmup:
            times.append((time.perf_counter() - s) * 1e3)
    cpu = (time.process_time() - cpu_start) / steps * 1e3
    return times, cpu, loss.item()


def generation_rate(model, prompt, a):
    """Median tokens/s of greedy `generate` with the KV cache (the EOS stop disabled: exactly --new-tokens)."""
    model.eval()
    gen = []
    with torch.no_grad():
        for i in range(1 + a.gen_runs):
            # The warm-up run is short: it only has to touch every code path once.
            n = min(8, a.new_tokens) if i == 0 else a.new_tokens
            s = time.perf_counter()
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=True,
                pad_token_id=model.config.eos_token_id,
            )
            if i >= 1:
                gen.append((out.shape[1] - prompt.shape[1]) / (time.perf_counter() - s))
    return statistics.median(gen)


def with_lora(model):
    """PEFT LoRA (r=16, alpha=32, dropout 0, the seven linears) and its trainable parameter count."""
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
    )
    return lora, sum(p.numel() for p in lora.parameters() if p.requires_grad)


def lora_only(model, ids, mask, a):
    lora, trainable = with_lora(model)
    steps, _, _ = train_steps(lora, ids, mask, a.warmup, a.steps)
    print(f"torch batch {a.batch} x {a.seq}, {'bf16 autocast' if a.bf16 else 'f32'}, torch {torch.__version__}")
    print(f"torch lora_step_ms {statistics.median(steps):.1f}")
    print(f"torch lora_trainable_params {trainable}")
    print(f"torch peak_rss_lora_mib {rss_mib():.0f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--gen-runs", type=int, default=3)
    ap.add_argument("--gguf", default=str(DEFAULT_GGUF))
    ap.add_argument("--bf16", action="store_true", help="forward and steps under bf16 autocast")
    ap.add_argument("--lora-only", action="store_true", help="only PEFT LoRA steps, then the process's peak RSS")
    ap.add_argument("--gen-only", action="store_true", help="only greedy generation, in f32 and with bf16 weights")
    a = ap.parse_args()
    global AUTOCAST
    if a.bf16:
        AUTOCAST = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()

    gguf = Path(a.gguf)
    s = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    load_s = time.perf_counter() - s
    # Pristine weights for generation and LoRA after the full steps have changed them.
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    b, t = a.batch, a.seq
    ids = (1000 + (torch.arange(b * t) * 7919) % 29000).reshape(b, t)
    mask = torch.ones(b, t, dtype=torch.int64)

    if a.gen_only:
        del pristine
        prompt = ids[:1, :32]
        print(f"torch {torch.__version__}, {a.threads} threads, greedy generation of {a.new_tokens} tokens")
        print(f"torch gen_tokens_per_s {generation_rate(model, prompt, a):.1f}")
        # PyTorch's fastest plain CPU generation: the weights themselves in bfloat16 (AMX/AVX512-BF16 matmuls).
        model.to(torch.bfloat16)
        print(f"torch gen_bf16_weights_tokens_per_s {generation_rate(model, prompt, a):.1f}")
        return
    if a.lora_only:
        # A process that only trains LoRA (as a LoRA SFT run does): its peak memory, nothing else before it.
        del pristine
        lora_only(model, ids, mask, a)
        return
    model.eval()
    fwd, first_loss = [], None
    with torch.no_grad():
        for i in range(a.warmup + a.steps):
            s = time.perf_counter()
            with AUTOCAST():
                loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
            if i == 0:
                first_loss = loss.item()
            if i >= a.warmup:
                fwd.append((time.perf_counter() - s) * 1e3)

    steps, step_cpu, last_loss = train_steps(model, ids, mask, a.warmup, a.steps)
    rss_full = rss_mib()
    params = sum(p.numel() for p in model.parameters())

    # Greedy generation with the KV cache from the original weights.
    model.load_state_dict(pristine)
    del pristine
    gen_rate = generation_rate(model, ids[:1, :32], a)

    import peft

    lora, lora_trainable = with_lora(model)
    lora_steps, lora_cpu, lora_loss = train_steps(lora, ids, mask, a.warmup, a.steps)

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"attn {model.config._attn_implementation}, {a.threads} threads, {params} parameters, "
        f"{'bf16 autocast' if a.bf16 else 'f32'}, "
        f"loaded in {load_s:.1f} s"
    )
    print(f"torch forward_ms {statistics.median(fwd):.1f}")
    print(f"torch step_ms {statistics.median(steps):.1f}")
    print(f"torch forward_min_ms {min(fwd):.1f}")
    print(f"torch step_min_ms {min(steps):.1f}")
    print(f"torch step_cpu_ms {step_cpu:.1f}")
    print(f"torch first_loss {first_loss:.4f}")
    print(f"torch last_loss {last_loss:.4f}")
    print(f"torch peak_rss_full_mib {rss_full:.0f}")
    print(f"torch lora_step_ms {statistics.median(lora_steps):.1f}")
    print(f"torch lora_step_cpu_ms {lora_cpu:.1f}")
    print(f"torch lora_trainable_params {lora_trainable}")
    print(f"torch lora_last_loss {lora_loss:.4f}")
    print(f"torch gen_tokens_per_s {gen_rate:.1f}")
    print(f"torch peak_rss_mib {rss_mib():.0f}")


if __name__ == "__main__":
    main()
