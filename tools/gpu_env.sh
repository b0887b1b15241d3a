# Sourced (not run) by tools/gpu_check.sh and tools/gpu_pretrain.sh, with NAME set to the caller's name: makes atombert
# importable by $PY from this working tree (PYTHONPATH, no install) and, where fastcore is missing (the GPU machine's
# image has torch, transformers, tokenizers, safetensors, numpy, tqdm but not fastcore), from the wheels in .whl/ that
# tools/gpu_wheels.sh downloads: they are installed with pip --no-index into $GPU_CHECK_SITE (default /tmp/atombert_site).
# $PYTHON picks the interpreter (default python3). Any failure is one line on stderr, "$NAME: error: ...", and exit 2.
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/atombert_site}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
NEEDED=${GPU_CHECK_MODULES:-fastcore}            # what atombert imports that the GPU image lacks
fail() { echo "$NAME: error: $*" >&2; exit 2; }

command -v "$PY" >/dev/null || fail "no Python interpreter '$PY' (set PYTHON)"
missing() { "$PY" -c "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))" $NEEDED; }
if ! missing; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || fail "'$NEEDED' is not importable by $PY and there are no wheels in $WHEELS/ (run tools/gpu_wheels.sh where pip reaches PyPI, and carry $WHEELS)"
  echo "$NAME: installing $(ls "$WHEELS"/*.whl | xargs -n1 basename | tr '\n' ' ')into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || fail "pip could not install the wheels in $WHEELS/ into $SITE"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" GPU_CHECK_INSTALLED_WHEELS="$SITE"
  missing || fail "'$NEEDED' is still not importable after installing $WHEELS/*.whl"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"      # atombert from this working tree
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 MPLBACKEND=Agg
err=$("$PY" -c 'import torch, transformers, tokenizers, safetensors, numpy, atombert.pretrain, atombert.training, atombert.hf, atombert.cli' 2>&1) \
  || fail "atombert does not import: $(echo "$err" | tail -1)"
