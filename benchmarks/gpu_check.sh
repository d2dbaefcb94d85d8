#!/usr/bin/env bash
# Everything only a GPU can show, in one run of under 8 minutes on one H200:
#   1. training: tokens/s, peak memory and MFU of `kocurate train` (TRL SFTTrainer + LoRA) on a
#      random-weight GPT-NeoX of polyglot-ko-1.3b's shape, with and without padding-free packing,
#      against transformers.Trainer + peft                       (benchmarks/bench_train.py --gpu)
#   2. evaluation: KoBEST 0 and 5 shots on the same shape in bf16, examples/s against lm-eval's HF
#      backend at the same batch size; identical scores in fp32  (benchmarks/bench_evaluate.py --gpu)
#   3. embedding and search: st: embedder texts/s on the GPU vs CPU; exact pair search on the GPU
#      vs FAISS on the CPU                                          (benchmarks/bench_gpu_search.py)
# Each part has its own time limit, so one slow part cannot eat the others' time.
#
#   bash benchmarks/gpu_wheels.sh                      # here, once: wheels the GPU image lacks -> .whl/
#   bash benchmarks/gpu_check.sh "$OUT"                # there (device run: carry .whl)
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh /tmp/g   # anywhere: tiny shapes, to see it runs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
# here the project's venv; on the GPU machine (no .venv travels) the image's python3, which holds torch
if [ -z "${PY:-}" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
TINY=()
[ "${GPU_CHECK_TINY:-0}" = 1 ] && TINY=(--tiny)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU"
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } \
  | tee "$OUT/env.txt"
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "== $name: exit $rc after $((SECONDS - start))s"
}
part train 200 $PY benchmarks/bench_train.py --gpu "${TINY[@]}" --out "$OUT/train.md"
part evaluate 170 $PY benchmarks/bench_evaluate.py --gpu "${TINY[@]}" --out "$OUT/evaluate.md"
part search 90 $PY benchmarks/bench_gpu_search.py "${TINY[@]}" --out "$OUT/search.md"
echo "figures: $OUT/*.md"
