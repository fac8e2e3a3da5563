#!/usr/bin/env bash
# The GPU check: every GPU path of the project once, one table (benchmarks/gpu_check.py says which).
#
#   bash benchmarks/gpu_check.sh --fetch_wheels   # here, before a GPU session: what the GPU machine lacks
#   bash benchmarks/gpu_check.sh                  # on the GPU machine: under 8 minutes on one GPU
#   bash benchmarks/gpu_check.sh --cpu            # the same parts at toy size on the CPU (the test suite runs it)
#
# The GPU machines lent to this project have torch, transformers, peft and accelerate but no package
# index: the rest travels as wheels in .whl/ (git-ignored, 64 MiB per call in all; bitsandbytes
# alone is 43 MB), installed into a folder of their own, never over the machine's torch.
# With the device tool: run(command="bash benchmarks/gpu_check.sh --json $OUT/gpu_check.json",
# carry=[".whl"], timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# What the parts that run there import, at requirements.txt's versions (the machine's transformers is
# older); dill and multiprocess are datasets' own; google-re2 and jsonschema (with its own three) are
# the package's (fcmistral/format/schemas.py), which the first GPU run (2026-12-04) found missing
# there. Not fastapi & co: serve.py runs in the dry run only.
WHEELS="bitsandbytes==0.50.2 transformers==5.23.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
        google-re2==1.1.20251105 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
        rpds-py==2026.9.1"
if [ "${1:-}" = --fetch_wheels ]; then
    rm -rf .whl  # this script's own folder: one version of each package (two stop the install)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
    du -sh .whl
    exit 0
fi
# The carried wheels are for the GPU machine's Python (3.12): never for the dry run here.
if [[ " $* " != *" --cpu "* ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl
    export PYTHONPATH=/tmp/gpu-check-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package, where it is not pip-installed
exec "$PYTHON" benchmarks/gpu_check.py "$@"
