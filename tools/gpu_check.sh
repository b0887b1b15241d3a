#!/usr/bin/env bash
# The GPU check of issue 15: one command, at most 8 minutes on one H100/H200-class GPU; one JSON and a printed table.
#
#   bash tools/gpu_check.sh [--out FILE] [--parts environment,cuda_tests,pretrain_step,pretraining]
#   bash tools/gpu_check.sh --dry-run     # the same script on CPU at smoke size (CI: tests/test_gpu_check.py)
#
# The work is tools/gpu_check.py (its docstring lists the parts). tools/gpu_env.sh makes atombert importable first
# (fastcore from the wheels in .whl/ where the machine lacks it).
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=gpu_check; source tools/gpu_env.sh
exec "$PY" tools/gpu_check.py "$@"
