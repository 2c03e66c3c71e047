# Sourced by the end-to-end benchmarks (trainer.sh, sft.sh): the PyTorch interpreter (the git-ignored .venv-torch,
# made by scripts/reference/setup.sh torch, or PYTHON=/path/to/python), THREADS (default 2) threads per side, our
# release CLI built, and `run`.
if [ -z "${PYTHON:-}" ]; then
  [ -x .venv-torch/bin/python ] || scripts/reference/setup.sh torch
  PYTHON=.venv-torch/bin/python
fi
threads=${THREADS:-2}
bin=target/release/finetune
cargo build --release -q -p finetune-cli

# run LABEL LOGFILE CMD...: runs CMD with the shared thread settings; sets wall (seconds), rss (peak, KiB) and
# cpu (user + system seconds of the process and its children: on a shared virtual machine it leaves out the time
# other guests hold the cores, which wall time does not; it does count threads spinning while they wait).
run() {
  local label=$1 log=$2
  shift 2
  local t0 t1
  t0=$(date +%s.%N)
  if ! RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    /usr/bin/time -f '%M %U %S' -o "$log.rss" "$@" > "$log" 2>&1; then
    echo "$label failed; the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  read -r rss user sys < <(tail -n 1 "$log.rss")
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')
}
