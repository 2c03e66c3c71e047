#!/usr/bin/env bash
# The real SmolLM2-135M-Instruct (30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152), loaded from
# assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf and dequantised to f32, batch 4 x 256, 2 threads:
# ours (crates/models/examples/bench_decoder.rs) against PyTorch + transformers + PEFT
# (scripts/bench/decoder_torch.py). Figures: loss forward, full fine-tuning step (forward + backward + clipping +
# AdamW), LoRA step (r=16, alpha=32, q/k/v/o/gate/up/down), greedy generation tokens/s with a KV cache (batch 1,
# 128 new tokens), peak RSS. Extra arguments (e.g. --steps 3 --warmup 1) go to both. Medians are the headline;
# minima and CPU time per step are less sensitive to other processes on the machine.
# `--bf16` (passed to both) compares `bf16 = true` with PyTorch under bf16 autocast (HF's `bf16=True`); generation
# stays f32 on both sides.
# PyTorch comes from the git-ignored .venv-torch (scripts/reference/setup.sh torch), or PYTHON=/path/to/python.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
  [ -x .venv-torch/bin/python ] || scripts/reference/setup.sh torch
  PYTHON=.venv-torch/bin/python
fi
gguf=assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] || { echo "$gguf is missing; run scripts/fetch.sh SmolLM2-135M-Instruct" >&2; exit 2; }

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads"
echo "load before: $(uptime)"
cargo build --release -q -p finetune-models --example bench_decoder
ours=$(target/release/examples/bench_decoder --lora --generate "$@")
echo "$ours"
echo "load between: $(uptime)"
theirs=$("$PYTHON" scripts/bench/decoder_torch.py "$@")
echo "$theirs"
echo "load after: $(uptime)"

get() { echo "$1" | awk -v k="$2" '$2 == k { print $3 }'; }
isnum() { [[ "$1" =~ ^[0-9.]+$ ]]; }
for k in forward_ms step_ms forward_min_ms step_min_ms step_cpu_ms lora_step_ms gen_tokens_per_s peak_rss_full_mib; do
  o=$(get "$ours" "$k"); t=$(get "$theirs" "$k")
  if isnum "$o" && isnum "$t"; then
    awk -v k="$k" -v o="$o" -v t="$t" 'BEGIN { printf "ratio ours/torch %-18s %.2fx  (%.1f vs %.1f)\n", k, o / t, o, t }'
  else
    # A side that prints "<key> not available ..." has no figure for it yet.
    isnum "$o" || o=${o:+not available}; isnum "$t" || t=${t:+not available}
    printf "ratio ours/torch %-18s n/a    (ours: %s, torch: %s)\n" "$k" "${o:-missing}" "${t:-missing}"
  fi
done
o=$(get "$ours" gen_tokens_per_s); q=$(get "$ours" gen_int8_tokens_per_s); t=$(get "$theirs" gen_tokens_per_s)
if isnum "$o" && isnum "$q"; then
  awk -v o="$o" -v q="$q" 'BEGIN { printf "ratio ours int8/f32  gen_tokens_per_s   %.2fx  (%.1f vs %.1f)\n", q / o, q, o }'
fi
if isnum "$q" && isnum "$t"; then
  awk -v q="$q" -v t="$t" 'BEGIN { printf "ratio ours int8/torch gen_tokens_per_s  %.2fx  (%.1f vs %.1f)\n", q / t, q, t }'
fi
echo "(ms and MiB: lower is better; gen_tokens_per_s: higher is better)"
