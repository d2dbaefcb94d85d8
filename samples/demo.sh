#!/usr/bin/env bash
# make demo: the main job on the bundled Korean sample, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
K=.venv/bin/kocurate
rm -rf out/demo
$K inspect samples/ko_instructions.jsonl
$K normalize samples/ko_instructions.jsonl -o out/demo/normalized
