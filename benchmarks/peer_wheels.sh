#!/usr/bin/env bash
# Downloads the GPU peers' wheels into .whl/ for benchmarks/gpu_check.sh (the GPU machine has no
# network): flash-maxsim 0.3.0 and late-interaction-kernels 0.4.5, without their dependencies
# (torch and triton are the machine's). `make peer-wheels` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: -d .whl flash-maxsim==0.3.0 late-interaction-kernels==0.4.5
ls -l .whl
