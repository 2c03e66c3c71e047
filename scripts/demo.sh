#!/usr/bin/env bash
# The main job. Until training lands, a metrics demo on a small built-in example.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p finetune-cli
bin=target/release/finetune
$bin metrics list
