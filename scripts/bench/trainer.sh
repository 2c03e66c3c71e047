#!/usr/bin/env bash
# End-to-end fine-tuning, ours (`finetune train`) against HF Trainer (PyTorch, scripts/bench/hf_trainer.py), on the
# real encoder tasks of examples/: sentiment (movie reviews), ner (WNUT-16) and spam (SpamAssassin).
#   scripts/bench/trainer.sh [sentiment|ner|spam|all] [--max-steps N] [--seed S] [--bf16]
# --max-steps N stops both sides after N optimizer steps: a quick check of the plumbing, not a benchmark.
# --seed S sets the training seed of both sides (head initialisation, dropout, shuffling); the split keeps the
# example's seed, so runs with different --seed see the same files (scripts/bench/seeds.sh).
# --bf16 trains both sides in bf16 mixed precision: ours `bf16 = true`, HF TrainingArguments(bf16=True) (autocast).
#
# Same data: the example's `split` (e.g. 80/10/10, seeded by its `seed`) is written to train/validation/test files
# by our CLI (`finetune data split`, --stratify for sequence classification, a random sentence split for CoNLL:
# exactly what `finetune train --config` does internally), and both sides read those files. The split is never
# reimplemented in Python. An example with validation_file/test_file instead of split is used as it is.
# Same hyper-parameters: both sides read the same TOML; ours with --set overrides for the files and output_dir,
# the HF side maps every TrainingArguments key to TrainingArguments one-to-one (see hf_trainer.py's header for
# what is kept equal: dynamic padding to a multiple of 8, label alignment, saving, evaluation).
# Same machine share: THREADS (default 2) threads each: RAYON_NUM_THREADS/OMP_NUM_THREADS for both processes
# and torch.set_num_threads on the HF side.
# Wall time: process start to exit of each side (model load, tokenisation, training, per-epoch evaluation and
# checkpoints, test prediction, saving), measured here with the same clock; peak RSS and CPU time (user + system,
# which leaves out the time other guests of a virtual machine hold the cores) by /usr/bin/time.
# Metrics on the test split: accuracy and macro-F1 (sequence classification; scikit-learn on the HF side) or
# entity-level micro F1 (NER; seqeval default mode on the HF side), read from each side's all_results.json.
#
# Output: bench-out/trainer/<task>/{data,ours,hf}/ and their logs; the tables are printed and written to
# bench-out/trainer_bench.md. PyTorch comes from the git-ignored .venv-torch (scripts/reference/setup.sh torch),
# or PYTHON=/path/to/python; CONFIG_DIR=dir reads <task>.toml from dir instead of examples/.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: $0 [sentiment|ner|spam|all] [--max-steps N] [--seed S] [--bf16]" >&2; exit 2; }
which=all
max_steps=
train_seed=
bf16=
while [ $# -gt 0 ]; do
  case "$1" in
    sentiment | ner | spam | all) which=$1 ;;
    --max-steps) [ $# -ge 2 ] || usage; max_steps=$2; shift ;;
    --max-steps=*) max_steps=${1#*=} ;;
    --seed) [ $# -ge 2 ] || usage; train_seed=$2; shift ;;
    --seed=*) train_seed=${1#*=} ;;
    --bf16) bf16=1 ;;
    *) usage ;;
  esac
  shift
done
if [ -n "$max_steps" ] && ! [[ "$max_steps" =~ ^[1-9][0-9]*$ ]]; then
  echo "--max-steps: expected a positive integer, got '$max_steps'" >&2
  exit 2
fi
if [ -n "$train_seed" ] && ! [[ "$train_seed" =~ ^[0-9]+$ ]]; then
  echo "--seed: expected a non-negative integer, got '$train_seed'" >&2
  exit 2
fi
[ "$which" = all ] && tasks=(sentiment ner spam) || tasks=("$which")
config_dir=${CONFIG_DIR:-examples}
for task in "${tasks[@]}"; do
  [ -f "$config_dir/$task.toml" ] || { echo "$config_dir/$task.toml: no such example config" >&2; exit 2; }
done

. scripts/bench/e2e-common.sh
root=bench-out/trainer
md=${MD:-bench-out/trainer_bench.md}
mkdir -p "$root"
versions=$("$PYTHON" -c 'from importlib.metadata import version as v
print(", ".join(f"{p} {v(p)}" for p in ["torch", "transformers", "scikit-learn", "seqeval"]))')
precision="f32 on both sides"
[ -n "$bf16" ] && precision="bf16 mixed on both sides: ours bf16 = true, HF bf16=True"
mode=${max_steps:+"quick plumbing check: --max-steps $max_steps (not a benchmark)"}
{
  echo "# HF Trainer vs finetune train ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "Produced by \`scripts/bench/trainer.sh ${which}${max_steps:+ --max-steps $max_steps}${train_seed:+ --seed $train_seed}${bf16:+ --bf16}\`; ${mode:-full runs}."
  echo "CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'); precision: $precision."
  echo "$threads threads each; reference: $versions. Load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Last column: metric difference ours - HF in percentage points; time and memory ratio ours / HF (below 1:"
  echo "ours is faster or smaller). Same train/validation/test files and hyper-parameters on both sides."
} > "$md"


for task in "${tasks[@]}"; do
  cfg=$config_dir/$task.toml
  dir=$root/$task
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "== $task ($cfg)"
  # The example's data keys, shell-quoted.
  eval "$("$PYTHON" - "$cfg" <<'EOF'
import shlex, sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
keys = ["task", "train_file", "validation_file", "test_file", "split", "seed", "text_column_name",
        "text_pair_column_name", "label_column_name", "format"]
defaults = {"task": "sequence-classification", "seed": 42, "text_column_name": "text", "label_column_name": "label"}
for k in keys:
    print(f"c_{k}={shlex.quote(str(c.get(k, defaults.get(k, ''))))}")
EOF
  )"
  if [ -n "$c_split" ]; then
    [ -n "$c_validation_file$c_test_file" ] && { echo "$cfg: split and validation_file/test_file both set" >&2; exit 2; }
    [[ "$c_split" == */*/* ]] || { echo "$cfg: split $c_split has no test part" >&2; exit 2; }
    split_args=("$c_train_file" --split "$c_split" --seed "$c_seed" -o "$dir/data")
    if [ "$c_task" = sequence-classification ]; then
      split_args+=(--stratify --text-column-name "$c_text_column_name" --label-column-name "$c_label_column_name")
      [ -n "$c_text_pair_column_name" ] && split_args+=(--text-pair-column-name "$c_text_pair_column_name")
    fi
    [ -n "$c_format" ] && split_args+=(--format "$c_format")
    $bin data split "${split_args[@]}" | sed 's/^/  split: /'
    pick() { local f=("$dir/data/$1".*); [ -f "${f[0]}" ] || { echo "no $1 file in $dir/data" >&2; exit 1; }; echo "${f[0]}"; }
    train=$(pick train)
    validation=$(pick validation)
    test=$(pick test)
  else
    [ -n "$c_test_file" ] || { echo "$cfg: needs split or test_file for test metrics" >&2; exit 2; }
    train=$c_train_file validation=$c_validation_file test=$c_test_file
  fi

  ours=(--set split=none --set "train_file=$train" --set "test_file=$test" --set "output_dir=$dir/ours"
    --set overwrite_output_dir=true)
  hf=(--train-file "$train" --test-file "$test" --output-dir "$dir/hf" --threads "$threads")
  if [ -n "$validation" ]; then
    ours+=(--set "validation_file=$validation")
    hf+=(--validation-file "$validation")
  fi
  if [ -n "$train_seed" ]; then
    ours+=(--set "seed=$train_seed")
    hf+=(--seed "$train_seed")
  fi
  if [ -n "$max_steps" ]; then
    ours+=(--set "max_steps=$max_steps")
    hf+=(--max-steps "$max_steps")
  fi
  if [ -n "$bf16" ]; then
    ours+=(--set bf16=true)
    hf+=(--bf16)
  fi
  echo "  load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  run ours "$dir/ours.log" "$bin" train --config "$cfg" "${ours[@]}" --progress lines
  ours_wall=$wall ours_rss=$rss ours_cpu=$cpu
  echo "  ours: ${ours_wall} s (log $dir/ours.log)"
  run "HF Trainer" "$dir/hf.log" "$PYTHON" scripts/bench/hf_trainer.py --config "$cfg" "${hf[@]}"
  hf_wall=$wall hf_rss=$rss hf_cpu=$cpu
  echo "  HF Trainer: ${hf_wall} s (log $dir/hf.log)"
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)

  "$PYTHON" - "$task" "$c_task" "$dir" "$ours_wall" "$hf_wall" "$ours_rss" "$hf_rss" "$load_after" "$md" "$ours_cpu" "$hf_cpu" <<'EOF'
import json, sys
task, kind, d, ow, hw, orss, hrss, load, md, ocpu, hcpu = sys.argv[1:]
ours = json.load(open(f"{d}/ours/all_results.json"))
hf = json.load(open(f"{d}/hf/all_results.json"))
if kind == "token-classification":
    metrics = [("test entity F1 (micro, seqeval)", "test_f1")]
else:
    metrics = [("test accuracy", "test_accuracy"), ("test macro-F1", "test_f1")]
rows = [("", "ours", "HF Trainer", "ours - HF, ours / HF")]
for name, key in metrics:
    if key not in ours or key not in hf:
        sys.exit(f"{task}: {key} missing from {d}/ours or {d}/hf all_results.json")
    o, h = ours[key], hf[key]
    rows.append((name, f"{o:.4f}", f"{h:.4f}", f"{100 * (o - h):+.2f} points"))
ow, hw = float(ow), float(hw)
rows.append(("wall time, end to end", f"{ow:.1f} s", f"{hw:.1f} s", f"{ow / hw:.2f}x"))
# In-process timers of each side (HF names): training including its per-epoch evaluations and checkpoints, and
# the test pass. The wall time above also holds start-up, model load, tokenisation and the final save.
for name, key in [("of which training (train_runtime)", "train_runtime"), ("test pass (test_runtime)", "test_runtime")]:
    if key in ours and key in hf:
        o, h = float(ours[key]), float(hf[key])
        rows.append((name, f"{o:.1f} s", f"{h:.1f} s", f"{o / h:.2f}x" if h > 0 else "-"))
oc, hc = float(ocpu), float(hcpu)
rows.append(("CPU time (user + system)", f"{oc:.1f} s", f"{hc:.1f} s", f"{oc / hc:.2f}x"))
rows.append(("peak RSS", f"{int(orss) / 1024:.0f} MiB", f"{int(hrss) / 1024:.0f} MiB", f"{int(orss) / int(hrss):.2f}x"))
n = lambda m, k: int(m[k]) if k in m else "?"
sizes = f"train {n(ours, 'train_samples')} / {n(hf, 'train_samples')}, test {n(ours, 'test_samples')} / {n(hf, 'test_samples')}"
width = [max(len(r[i]) for r in rows) for i in range(4)]
print(f"  {task}: examples ours / HF: {sizes}")
for r in rows:
    print("  " + "  ".join(c.ljust(w) for c, w in zip(r, width)))
with open(md, "a") as f:
    f.write(f"\n## {task}\n\n")
    f.write(f"Examples ours / HF: {sizes}; load average after: {load}.\n\n")
    f.write("| " + " | ".join(rows[0]) + " |\n| --- | --- | --- | --- |\n")
    for r in rows[1:]:
        f.write("| " + " | ".join(r) + " |\n")
EOF
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tables written to $md"
