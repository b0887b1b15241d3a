#!/usr/bin/env bash
# Download, into the git-ignored folder .whl/, the wheels that atombert needs on the GPU machine and that its image
# lacks, for its Python 3.12 on x86-64 Linux. `tools/gpu_check.sh` installs them there when `import fastcore` fails.
#
#   bash tools/gpu_wheels.sh          # then carry `.whl` with the working tree
#
# What the GPU image already holds (its package list): torch, transformers, tokenizers, safetensors, numpy, tqdm,
# matplotlib, pandas, pyarrow, pytest. What atombert imports at import time beyond those: fastcore (atombert.config,
# atombert.model, atombert.mnli, atombert.cli; it needs no other package). `datasets` is imported lazily, only for the
# hub corpora, table (.jsonl/.parquet/.arrow) corpora and `load_mnli`: the GPU check uses none of them (the builtin
# corpus and in-memory NLI pairs), so it does not travel (it would bring dill, multiprocess, xxhash, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the version the project's tests run with here (settings.ini asks for fastcore>=1.12.3,<1.13)
WHEELS=(${GPU_WHEELS:-fastcore==1.12.47})

rm -rf .whl && mkdir -p .whl          # one version of each package: two would stop the install there
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
"$PY" - <<'EOF'                          # each wheel's own requirements, for the record (fastcore: none)
import glob, os, zipfile
for w in sorted(glob.glob('.whl/*.whl')):
    z = zipfile.ZipFile(w)
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    reqs = [l.split(':', 1)[1].strip() for l in z.read(meta).decode().splitlines()
            if l.startswith('Requires-Dist:') and 'extra ==' not in l]
    print(f"{os.path.basename(w)}: requires {', '.join(reqs) or 'nothing'}")
EOF
du -ch .whl/*.whl | tail -1
