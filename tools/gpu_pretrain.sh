#!/usr/bin/env bash
# The seed's job on one GPU (issue 27): atombert-8m pretrained on Wikipedia and finetuned on MNLI, at most 9 minutes.
#
#   python tools/gpu_pretrain.py prepare              # first, here: gpu_data/ (3 shards, the tokenizer, MNLI, held-out text)
#   bash tools/gpu_pretrain.sh --data gpu_data        # on the GPU machine (carry .whl and gpu_data); results to $OUT
#   bash tools/gpu_pretrain.sh --dry-run              # the same job on CPU at smoke size (CI: tests/test_gpu_pretrain.py)
#
# The work is tools/gpu_pretrain.py (its docstring lists the phases). tools/gpu_env.sh makes atombert importable first.
set -uo pipefail
cd "$(dirname "$0")/.."
export GPU_JOB_START=$(date +%s.%N)    # the job counts its time from here: the device limit counts pip too
NAME=gpu_pretrain; source tools/gpu_env.sh
export TOKENIZERS_PARALLELISM=true                # pretokenizing uses every core (nothing forks while tokenizers works)
exec "$PY" tools/gpu_pretrain.py run "$@"
