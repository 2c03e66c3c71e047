#!/usr/bin/env bash
# `finetune generate` from f32 weights against `--int8` (Q8_0 copies, AVX512-VNNI where the CPU has it),
# same binary, same prompts, one after the other:
#   1. the review-sentiment LoRA adapter (examples/sft/review_sentiment.toml; trained here first when ADAPTER does
#      not exist) on its 200 test prompts: exact match and wall time;
#   2. SmolLM2-135M-Instruct on the 200 e-mail-subject test prompts, batch 1, 32 new tokens: ROUGE-L, wall time,
#      tokens per second and how many predictions are identical.
#   scripts/bench/int8_generate.sh        (ADAPTER=dir to reuse a trained adapter; OUT=dir for the outputs)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/finetune
OUT="${OUT:-bench-out/int8}"
ADAPTER="${ADAPTER:-bench-out/review_sentiment-bf16}"
BASE=assets/SmolLM2-135M-Instruct
cargo build --release --locked -q -p finetune-cli
mkdir -p "$OUT"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ! -f "$ADAPTER/adapter_model.safetensors" ]]; then
  "$BIN" sft --config examples/sft/review_sentiment.toml --progress off --set bf16=true --set output_dir="$ADAPTER"
fi

# gen NAME EXTRA-ARGS...: wall seconds into $OUT/NAME.secs, metrics JSON into $OUT/NAME.json
gen() {
  local name=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" generate "$@" --out "$OUT/$name.jsonl" --json >"$OUT/$name.json" 2>"$OUT/$name.log"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc >"$OUT/$name.secs"
}
S=(--model "$ADAPTER" --base "$BASE" --data assets/data/sft/review_sentiment.test.jsonl --max-new-tokens 4)
gen review-f32 "${S[@]}"
gen review-int8 "${S[@]}" --int8
E=(--model "$BASE" --data assets/data/sft/email_subject.test.jsonl --max-new-tokens 32 --batch-size 1)
gen email-f32 "${E[@]}"
gen email-int8 "${E[@]}" --int8
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); int8 kernel: $(sed -n 's/.*kernel.*/&/p' "$OUT/email-int8.log" | head -1)"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(n):
    m = json.load(open(f"{out}/{n}.json"))["metrics"]
    preds = [json.loads(l)["prediction"] for l in open(f"{out}/{n}.jsonl")]
    return m, preds, float(open(f"{out}/{n}.secs").read())
for task, key in [("review", "exact_match"), ("email", "rougeL")]:
    (mf, pf, tf), (mq, pq, tq) = load(f"{task}-f32"), load(f"{task}-int8")
    same = sum(a == b for a, b in zip(pf, pq))
    print(f"{task:<7} f32: {key} {mf[key]:.4f}, {tf:6.1f} s | int8: {key} {mq[key]:.4f}, {tq:6.1f} s | "
          f"int8/f32 time {tq / tf:.2f}x | identical predictions {same}/{len(pf)}")
PY
