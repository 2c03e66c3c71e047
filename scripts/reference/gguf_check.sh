#!/usr/bin/env bash
# Verifies `finetune export` with the real runtime (not part of CI; needs assets/SmolLM2-135M-Instruct):
# installs the pinned `gguf` package and llama-cpp-python (built from its sdist: compiling llama.cpp takes a
# while on a small machine) into the git-ignored .venv-gguf, builds the release binary, then runs
# gguf_check.py: exports f16 and q8_0, reads them with `gguf`, loads them in llama.cpp, chats, and compares
# perplexity and logits with ours.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv-gguf"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import llama_cpp, gguf, tokenizers" 2>/dev/null; then
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" \
    nice -n 10 "$venv/bin/pip" install -r "$root/scripts/reference/requirements-gguf.txt"
fi
# FINETUNE_BIN=path skips the release build (e.g. target/debug/finetune after `cargo test -p finetune-cli`, which
# builds it with the test profile's opt-level 2).
bin=${FINETUNE_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -p finetune-cli)
  bin="$root/target/release/finetune"
fi
"$venv/bin/python" "$root/scripts/reference/gguf_check.py" "$bin"
