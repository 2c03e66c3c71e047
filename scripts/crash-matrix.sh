#!/usr/bin/env bash
# Crash matrix: a short classification run (a small random BERT with MiniLM's tokenizer, on a 1 200-review subset
# of assets/data/sentiment, checkpoints every 5 steps and evaluation every 6) is run once uninterrupted, then
# KILLS times SIGKILLed at a seeded random moment (uniform over the reference's wall time, right after a
# checkpoint directory appears, right when an evaluation starts) and resumed with
# `--resume-from-checkpoint latest`; every resumed run's model.safetensors must hash (sha256) as the
# reference's. Then a disk-full run: output_dir on a small tmpfs so that a later checkpoint write runs out of
# space; the exit must be non-zero with a one-line error naming the path, and the previous checkpoint intact.
#
#   scripts/crash-matrix.sh [SEED] [KILLS]     (root for the tmpfs part; needs python3 for the random weights)
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${1:-$RANDOM}"
KILLS="${2:-20}"
BIN="${FINETUNE_BIN:-target/release/finetune}"
WORK="${CRASH_WORK:-$(mktemp -d /tmp/crash-matrix.XXXXXX)}"
echo "crash matrix: seed $SEED, $KILLS kills, work dir $WORK"
lscpu 2>/dev/null | grep 'Model name' || true
if [[ ! -x "$BIN" ]]; then
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release --locked -p finetune-cli
fi
MINILM=assets/all-MiniLM-L6-v2
[[ -f "$MINILM/tokenizer.json" ]] || { echo "missing $MINILM (see scripts/fetch.sh)" >&2; exit 2; }

# A small random BERT (hidden 64, 2 layers) over MiniLM's vocabulary: checkpoints of ~25 MB, steps of
# milliseconds, so that 40 runs take minutes while every checkpoint and evaluation path is the real one.
MODEL="$WORK/tiny-bert"
mkdir -p "$MODEL"
cp "$MINILM"/{tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} "$MODEL"/
python3 - "$MODEL" <<'EOF'
import json, random, struct, sys
d = sys.argv[1]
V, C, L, F, P = 30522, 64, 2, 128, 128
cfg = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": V, "hidden_size": C,
       "num_hidden_layers": L, "num_attention_heads": 2, "intermediate_size": F, "max_position_embeddings": P,
       "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
json.dump(cfg, open(f"{d}/config.json", "w"), indent=2)
shapes = {"embeddings.word_embeddings.weight": [V, C], "embeddings.position_embeddings.weight": [P, C],
          "embeddings.token_type_embeddings.weight": [2, C], "embeddings.LayerNorm.weight": [C],
          "embeddings.LayerNorm.bias": [C]}
for i in range(L):
    p = f"encoder.layer.{i}"
    for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
        shapes[f"{p}.{n}.weight"] = [C, C]; shapes[f"{p}.{n}.bias"] = [C]
    shapes[f"{p}.intermediate.dense.weight"] = [F, C]; shapes[f"{p}.intermediate.dense.bias"] = [F]
    shapes[f"{p}.output.dense.weight"] = [C, F]; shapes[f"{p}.output.dense.bias"] = [C]
    for n in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[f"{p}.{n}.weight"] = [C]; shapes[f"{p}.{n}.bias"] = [C]
rng = random.Random(0)
header, blobs, off = {}, [], 0
for name, shape in shapes.items():
    n = 1
    for s in shape: n *= s
    if name.endswith("LayerNorm.weight"): vals = [1.0] * n
    elif name.endswith("bias") or "LayerNorm" in name: vals = [0.0] * n
    else: vals = [rng.gauss(0, 0.02) for _ in range(n)]
    b = struct.pack(f"<{n}f", *vals)
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(f"{d}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
EOF
# Every 9th review: both labels, 1 174 rows.
awk 'NR == 1 || NR % 9 == 0' assets/data/sentiment/movie_reviews.csv > "$WORK/reviews.csv"

config() { # output_dir [extra toml] -> config path
  cat > "$1.toml" <<EOF
model_name_or_path = "$MODEL"
task = "sequence-classification"
train_file = "$WORK/reviews.csv"
text_column_name = "text"
label_column_name = "label"
split = "80/10/10"
max_seq_length = 64
output_dir = "$1"
overwrite_output_dir = true
seed = 42
max_steps = 60
per_device_train_batch_size = 16
per_device_eval_batch_size = 64
learning_rate = 5e-4
warmup_ratio = 0.1
eval_strategy = "steps"
eval_steps = 6
save_strategy = "steps"
save_steps = 5
logging_steps = 3
${2:-save_total_limit = 2}
EOF
  echo "$1.toml"
}
train() { "$BIN" train --config "$1" --progress off "${@:2}"; }
now() { date +%s.%N; }
hash_of() { sha256sum "$1" 2>/dev/null | cut -c1-16 || echo missing; }

# Reference (keeping every checkpoint, for the disk-full check; rotation does not change the training).
REF="$WORK/ref"
t0=$(now)
train "$(config "$REF" "# every checkpoint kept")" > "$WORK/ref.log" 2>&1
t1=$(now)
T=$(echo "$t1 - $t0" | bc -l)
REF_HASH=$(hash_of "$REF/model.safetensors")
printf 'reference: %.1f s, model.safetensors %s\n' "$T" "$REF_HASH"

# Seeded stream of uniform numbers in [0, 1), in $U (no subshell: the state must advance).
RNG_STATE=$SEED
uniform() {
  RNG_STATE=$(( (RNG_STATE * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff ))
  U=$(echo "scale=6; $(( (RNG_STATE >> 16) % 1000000 )) / 1000000" | bc -l)
}

declare -a ROWS
pass=0
for i in $(seq 1 "$KILLS"); do
  OUT="$WORK/run$i"
  cfg=$(config "$OUT")
  case $(( i % 4 )) in
    0) mode=checkpoint ;;
    1) mode=eval ;;
    *) mode=uniform ;;
  esac
  uniform
  u=$U
  # The binary itself in the background (not a shell function: SIGKILL must reach the trainer).
  "$BIN" train --config "$cfg" --progress off > "$OUT.log" 2>&1 &
  pid=$!
  start=$(now)
  case $mode in
    uniform)
      # Uniform over the reference's wall time (process start included).
      delay=$(echo "$u * $T" | bc -l)
      sleep "$delay"
      ;;
    checkpoint)
      # While the k-th checkpoint is being written (its .tmp directory exists).
      k=$(( 1 + $(echo "$u * 11 / 1" | bc) ))
      seen=0; last=""
      while kill -0 "$pid" 2>/dev/null; do
        tmp=$(ls -d "$OUT"/checkpoint-*.tmp 2>/dev/null | head -n1 || true)
        if [[ -n "$tmp" && "$tmp" != "$last" ]]; then seen=$((seen + 1)); last=$tmp; fi
        [[ $seen -ge $k ]] && break
        sleep 0.002
      done
      ;;
    eval)
      # Right after the training log of an evaluation step (evaluation follows it), plus 0-50 ms.
      k=$(( 1 + $(echo "$u * 9 / 1" | bc) ))
      while kill -0 "$pid" 2>/dev/null; do
        # The newest log line is the training log of an evaluation step, and its evaluation has not logged yet.
        line=$(grep '"event":"log"' "$OUT/events.jsonl" 2>/dev/null | tail -n1 || true)
        step=$(echo "$line" | grep -o '"step":[0-9]*' | cut -d: -f2 || true)
        if [[ -n "$step" && "$line" != *eval_* && $(( step % 6 )) -eq 0 && $(( step / 6 )) -ge $k ]]; then break; fi
        sleep 0.002
      done
      sleep "$(echo "$u * 0.05" | bc -l)"
      ;;
  esac
  at=$(echo "$(now) - $start" | bc -l)
  if kill -9 "$pid" 2>/dev/null; then killed=yes; else killed="no (finished)"; fi
  wait "$pid" 2>/dev/null || true
  ckpts=$( (ls -d "$OUT"/checkpoint-* 2>/dev/null || true) | xargs -r -n1 basename | tr '\n' ' ')
  # Resume (from scratch when the kill came before the first checkpoint).
  complete=$( (ls -d "$OUT"/checkpoint-[0-9]* 2>/dev/null || true) | grep -vc '\.tmp$' || true)
  if [[ $complete -gt 0 && ! -f "$OUT/model.safetensors" ]]; then
    train "$cfg" --resume-from-checkpoint latest >> "$OUT.log" 2>&1 || true
  elif [[ ! -f "$OUT/model.safetensors" ]]; then
    train "$cfg" >> "$OUT.log" 2>&1 || true
  fi
  h=$(hash_of "$OUT/model.safetensors")
  ok=FAIL; [[ "$h" == "$REF_HASH" ]] && { ok=ok; pass=$((pass + 1)); }
  ROWS+=("$(printf '%3d  %-10s  %6.2f s  %-14s  %-34s  %s  %s' "$i" "$mode" "$at" "$killed" "${ckpts:-none}" "$h" "$ok")")
  echo "${ROWS[-1]}"
  [[ $ok == ok ]] && rm -rf "$OUT"
done

# Disk full: 40 MiB holds the first checkpoint (~25 MB) but not the second.
FULL="$WORK/full"
mkdir -p "$FULL"
disk="skipped (not root)"
if [[ $(id -u) -eq 0 ]]; then
  mount -t tmpfs -o size=40M tmpfs "$FULL"
  set +e
  train "$(config "$FULL/out")" > "$WORK/full.stdout" 2> "$WORK/full.stderr"
  code=$?
  set -e
  err=$(grep -v '^\s*$' "$WORK/full.stderr" | tail -n 1)
  lines=$(grep -c . "$WORK/full.stderr" || true)
  first=$( (ls -d "$FULL"/out/checkpoint-[0-9]* 2>/dev/null || true) | grep -v '\.tmp$' | head -n1)
  # The surviving checkpoint must equal the reference run's checkpoint of the same step, file by file.
  intact="no checkpoint"
  if [[ -n "$first" ]]; then
    step=${first##*-}
    intact=yes
    for f in model.safetensors optimizer.safetensors config.json; do
      [[ "$(hash_of "$first/$f")" == "$(hash_of "$REF/checkpoint-$step/$f")" ]] || intact="no ($f differs)"
    done
    grep -q '"global_step": '"$step" "$first/trainer_state.json" || intact="no (trainer_state.json)"
    leftovers=$(ls -a "$FULL/out" | grep -c '\.tmp' || true)
    intact="$intact, $(basename "$first"), $leftovers temporary entries left"
  fi
  umount "$FULL"
  disk="exit $code; stderr $lines line(s): $err; previous checkpoint intact: $intact"
fi

echo
echo "== crash matrix (seed $SEED) =="
printf '%3s  %-10s  %8s  %-14s  %-34s  %-16s  %s\n' run aimed killed_at killed checkpoints_at_kill sha256 result
printf '%s\n' "${ROWS[@]}"
echo "reference: $(printf '%.1f' "$T") s, sha256 $REF_HASH; $pass/$KILLS resumed runs bitwise equal"
echo "disk full: $disk"
[[ $pass -eq $KILLS ]]
