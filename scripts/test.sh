#!/usr/bin/env bash
# The test suite: no Python, no network beyond the crate registry, tiny fixtures only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
