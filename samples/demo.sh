#!/usr/bin/env bash
# make demo: the main job on the bundled Korean sample, offline, with the embedded defaults.
#   dedup -> decontaminate against the KoBEST fixture -> KoQuality-style 1% selection,
#   plus the CoT per-task cap, then a dry run of the upload. Results land in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
K=.venv/bin/kocurate
OUT=out/demo
rm -rf "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. what is in the sample"
$K inspect samples/ko_instructions.jsonl --top 5

step "2. exact + semantic near-duplicates (USE-multilingual, offline)"
$K dedup samples/ko_instructions.jsonl -o "$OUT/dedup"

step "3. decontamination against the KoBEST test sets (fixture in samples/kobest)"
$K decontaminate "$OUT/dedup" -o "$OUT/clean" --against kobest --data-dir samples/kobest

step "4. KoQuality selection: 5 length groups x k-means x perplexity sampling, ratio 0.01"
# --scorer charlm: an offline character model stands in for polyglot-ko-1.3b;
# --clusters 10: K=100 per group would leave ~6 rows per cluster on a 3k-row sample.
$K select "$OUT/clean" -o "$OUT/koquality-1pct" --ratio 0.01 --clusters 10 --scorer charlm

step "5. CoT-Collection recipe: at most 100 rows per task"
$K cap samples/ko_cot.jsonl --preset cot-collection -o "$OUT/cot-capped" --per-task 100

step "6. what would be uploaded (no network, no token needed)"
$K push-to-hub "$OUT/koquality-1pct" your-name/koquality-demo --dry-run

step "done"
echo "Dataset folders in $OUT/: $(ls "$OUT" | tr '\n' ' ')"
echo "Look at a card:  less $OUT/koquality-1pct/README.md"
echo "See removals:    $K explain $OUT/dedup"
