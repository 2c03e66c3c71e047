#!/usr/bin/env bash
# LoRA SFT end to end, ours (`finetune sft --config`) against TRL's SFTTrainer + PEFT (scripts/bench/trl_sft.py),
# on one SFT example (default examples/sft/review_sentiment.toml: SmolLM2-135M-Instruct, packing into 512-token
# rows, completion-only loss, LoRA r 16 on all linears, 100 steps of 4 rows).
#   scripts/bench/sft.sh [--config examples/sft/X.toml] [--max-steps N] [--bf16]
# --max-steps N stops both sides after N optimizer steps (shorter runs; the test metrics then mean little).
# --bf16: ours bf16 = true, TRL SFTConfig(bf16=True) (autocast).
# Both sides read the same TOML and the same train/validation/test files; checkpoints are off on both sides
# (save_strategy = "no"). Wall time is process start to exit on one clock (model load, tokenisation, packing,
# training, validation and test loss, greedy generation for every test prompt); peak RSS and CPU time (user +
# system) by /usr/bin/time.
# Output: bench-out/sft/{ours,trl}/ with logs; the table is printed and written to bench-out/sft_bench.md.
# PyTorch, PEFT and TRL come from the git-ignored .venv-torch (scripts/reference/setup.sh torch), or
# PYTHON=/path/to/python. THREADS (default 2) threads each.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: $0 [--config FILE] [--max-steps N] [--bf16]" >&2; exit 2; }
cfg=examples/sft/review_sentiment.toml
max_steps=
bf16=
while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || usage; cfg=$2; shift ;;
    --max-steps) [ $# -ge 2 ] || usage; max_steps=$2; shift ;;
    --bf16) bf16=1 ;;
    *) usage ;;
  esac
  shift
done
[ -f "$cfg" ] || { echo "$cfg: no such config" >&2; exit 2; }
if [ -n "$max_steps" ] && ! [[ "$max_steps" =~ ^[1-9][0-9]*$ ]]; then
  echo "--max-steps: expected a positive integer, got '$max_steps'" >&2
  exit 2
fi
. scripts/bench/e2e-common.sh
root=bench-out/sft
md=${MD:-bench-out/sft_bench.md}
rm -rf "$root"
mkdir -p "$root"


echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'); config $cfg${max_steps:+, --max-steps $max_steps}${bf16:+, bf16}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
ours=(sft --config "$cfg" --set "output_dir=$root/ours" --set save_strategy=no --progress off)
[ -n "$max_steps" ] && ours+=(--set "max_steps=$max_steps")
[ -n "$bf16" ] && ours+=(--set bf16=true)
run ours "$root/ours.log" "$bin" "${ours[@]}"
ours_wall=$wall ours_rss=$((rss / 1024)) ours_cpu=$cpu
echo "  ours: $ours_wall s"
theirs=(scripts/bench/trl_sft.py --config "$cfg" --output-dir "$root/trl" --threads "$threads")
[ -n "$max_steps" ] && theirs+=(--max-steps "$max_steps")
[ -n "$bf16" ] && theirs+=(--bf16)
run TRL "$root/trl.log" "$PYTHON" "${theirs[@]}"
trl_wall=$wall trl_rss=$((rss / 1024)) trl_cpu=$cpu
echo "  TRL: $trl_wall s"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PYTHON" - "$root" "$ours_wall" "$trl_wall" "$ours_rss" "$trl_rss" "$cfg" "${max_steps:-}" "${bf16:-}" "$ours_cpu" "$trl_cpu" \
  > "$md" <<'EOF'
import json, subprocess, sys
from importlib.metadata import version
root, ow, tw, orss, trss, cfg, steps, bf16, ocpu, tcpu = sys.argv[1:]
o = json.load(open(f"{root}/ours/all_results.json"))
t = json.load(open(f"{root}/trl/all_results.json"))
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
em = o.get("test_exact_match", float("nan"))
print(f"# LoRA SFT end to end: finetune sft vs TRL SFTTrainer ({cfg}{', --max-steps ' + steps if steps else ''}"
      f"{', bf16' if bf16 else ', f32'})\n")
print(f"CPU: {cpu}; trl {version('trl')}, peft {version('peft')}, transformers {version('transformers')}, "
      f"torch {version('torch')}.\n")
print("| | ours | TRL + PEFT | ours / TRL |\n| --- | --- | --- | --- |")
print(f"| wall time, end to end | {float(ow):.1f} s | {float(tw):.1f} s | {float(ow) / float(tw):.2f}x |")
print(f"| training (`train_runtime`) | {o['train_runtime']:.1f} s | {t['train_runtime']:.1f} s | "
      f"{o['train_runtime'] / t['train_runtime']:.2f}x |")
print(f"| CPU time (user + system) | {float(ocpu):.1f} s | {float(tcpu):.1f} s | {float(ocpu) / float(tcpu):.2f}x |")
print(f"| peak RSS | {orss} MiB | {trss} MiB | {int(orss) / int(trss):.2f}x |")
print(f"| validation loss (completion tokens) | {o.get('eval_loss', float('nan')):.4f} | "
      f"{t.get('eval_loss', float('nan')):.4f} | |")
print(f"| test loss (completion tokens) | {o.get('test_loss', float('nan')):.4f} | {t['test_loss']:.4f} | |")
print(f"| test exact match | {em:.1f}% | {t['test_exact_match']:.1f}% | |")
EOF
cat "$md"
