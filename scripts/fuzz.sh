#!/usr/bin/env bash
# Fuzzes every reader of untrusted input for N inputs per target (default 1 000 000): safetensors, the
# restricted unpickler, GGUF, config.json (+ model construction), tokenizer.json, CSV/TSV/JSONL/CoNLL, chat
# templates and the metrics JSON interface. Fails on any panic, hang or allocation larger than the input
# justifies; the offending inputs are written to fuzz-findings/. FUZZ_SEED picks the mutation stream.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
shift || true
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo build --release --locked -p finetune-fuzz --bin fuzz
lscpu 2>/dev/null | grep 'Model name' || true
exec target/release/fuzz "$N" "$@"
