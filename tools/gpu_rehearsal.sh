#!/usr/bin/env bash
# Rehearse the GPU check (issue 15) and the GPU job (issue 27) on this CPU machine with the GPU machine's software, before
# spending device time:
# a virtual environment with its versions of Python, torch, transformers, tokenizers, numpy and safetensors (as
# /work/.library/device/KINDS.md lists them; torch comes as the CUDA build, which runs on a CPU too), no fastcore
# (it travels as a wheel: tools/gpu_wheels.sh), then
#   1. `tools/gpu_check.sh --dry-run` with that interpreter (installs fastcore from .whl/ as on the GPU machine);
#   2. the CUDA tests' code on the CPU (ATOMBERT_CUDA_TESTS_DEVICE=cpu, tests/test_cuda.py says what stands in);
#   3. `tools/gpu_pretrain.sh --dry-run` with that interpreter: the job without `datasets` or scikit-learn, as there, on
#      the small data `prepare --small` writes (with this environment's python3; a second shard as --more-shards), or on $REHEARSAL_DATA (the folder
#      `python tools/gpu_pretrain.py prepare` wrote: the real shards, tokenizer and pairs) at the dry run's model sizes.
# What it cannot rehearse: CUDA itself (kernels, flash attention, NCCL, memory, speed).
#
#   bash tools/gpu_rehearsal.sh      # about 5 GB of downloads the first time (torch's CUDA libraries), then ~2 minutes
#
# $PYTHON312 picks the Python 3.12 interpreter; $REHEARSAL_VENV the environment's folder (default /tmp/atombert-gpu-image).
set -euo pipefail
cd "$(dirname "$0")/.."
is312() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; }
PY312=${PYTHON312:-}
if [ -z "$PY312" ]; then      # python3.12 on the PATH, else pyenv's (its shim on the PATH may point at another version)
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do is312 "$c" && { PY312=$c; break; }; done
fi
VENV=${REHEARSAL_VENV:-/tmp/atombert-gpu-image}
# the GPU image's versions (KINDS.md, 2026-11), and what else atombert's tests import there
IMAGE=(torch==2.11.0 transformers==5.17.0 tokenizers==0.23.2 numpy==2.5.2 safetensors==0.8.0 pytest tqdm matplotlib pandas pyarrow)
fail() { echo "gpu_rehearsal: error: $*" >&2; exit 2; }

[ -n "$PY312" ] && is312 "$PY312" || fail "no Python 3.12 interpreter found (set PYTHON312)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "gpu_rehearsal: making $VENV with ${IMAGE[*]}"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/pip" install -q "${IMAGE[@]}" 2> >(grep -v 'is ignored: it is neither' >&2) || fail "pip could not install ${IMAGE[*]}"
fi
"$VENV/bin/python" -c 'import fastcore' 2>/dev/null && fail "$VENV has fastcore: the GPU image does not (make a fresh one)"
ls .whl/*.whl >/dev/null 2>&1 || bash tools/gpu_wheels.sh
"$VENV/bin/python" -c 'import sys, torch, transformers; print(f"gpu_rehearsal: Python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")'

site=$(mktemp -d); work=$(mktemp -d)
trap 'rm -rf "$site" "$work"' EXIT
echo "== 1. tools/gpu_check.sh --dry-run =="
PYTHON="$VENV/bin/python" GPU_CHECK_SITE="$site" bash tools/gpu_check.sh --dry-run --out "$work/gpu_check.json" --work "$work/scratch"
echo "== 2. the CUDA tests on the CPU =="
PYTHONPATH="$site:$PWD" CUDA_VISIBLE_DEVICES= ATOMBERT_CUDA_TESTS_DEVICE=cpu \
  "$VENV/bin/python" -m pytest -m cuda -q -p no:cacheprovider --basetemp "$work/pytest" tests/test_cuda.py
data=${REHEARSAL_DATA:-$work/gpu_data}; more=()
echo "== 3. tools/gpu_pretrain.sh --dry-run --data $data =="
if [ -z "${REHEARSAL_DATA:-}" ]; then     # here: prepare reads MNLI with datasets; one shard carried, one as a staged folder
  python3 tools/gpu_pretrain.py prepare --small --shards 1 --data "$data"
  python3 tools/gpu_pretrain.py prepare --small --first-shard 1 --shards-only --data "$work/gpu_more"; more=(--more-shards "$work/gpu_more")
fi
PYTHON="$VENV/bin/python" GPU_CHECK_SITE="$site" bash tools/gpu_pretrain.sh --dry-run --data "$data" "${more[@]}" --work "$work/gpu_pretrain" \
  --out-dir "$work/gpu_pretrain_out"
echo "gpu_rehearsal: all three passed"
