#!/usr/bin/env bash
# The GPU check, in one command, on a machine with a GPU and torch already installed:
# builds kdops in place, runs the whole test suite (the CUDA cases run there), compute-sanitizer
# on the CUDA tests where available, and the benchmarks with GPU peers; logs and results go to
# OUT_DIR (at most two levels deep, so the device tool can bring them back).
#
#   benchmarks/gpu_check.sh OUT_DIR
#   KDOPS_CHECK_DEVICE=cpu benchmarks/gpu_check.sh OUT_DIR    # dry run of the same steps on a CPU
#
# Peers that pip cannot reach there travel as wheels in .whl/ (flash-maxsim,
# late-interaction-kernels); they are installed into a private target, not the system.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
device=${KDOPS_CHECK_DEVICE:-cuda}
status=0

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/kdops-peers .whl/*.whl \
    && export PYTHONPATH=/tmp/kdops-peers${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== build" | tee "$out/summary.txt"
if ! python3 -m pip install -q --no-build-isolation -e . > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "build failed" >> "$out/summary.txt"; exit 1
fi
python3 -m kdops.info | tee -a "$out/summary.txt"
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/summary.txt"
fi

echo "== tests" | tee -a "$out/summary.txt"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/tests.log" | tail -5
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
tail -1 "$out/tests.log" >> "$out/summary.txt"

if [ "$device" = cuda ] && { command -v compute-sanitizer > /dev/null || [ -x "$CUDA_HOME/bin/compute-sanitizer" ]; }; then
  sanitizer=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool" | tee -a "$out/summary.txt"
    "$sanitizer" --tool "$tool" --error-exitcode 9 python3 -m pytest -q -x -p no:cacheprovider \
      -k "cuda and not compile and not fuzz" tests/test_margin_mse.py tests/test_plackett_luce.py tests/test_maxsim.py \
      > "$out/sanitizer-$tool.log" 2>&1
    rc=$?; echo "$tool exit $rc" | tee -a "$out/summary.txt"; [ $rc -eq 0 ] || status=1
  done
fi

echo "== benchmarks" | tee -a "$out/summary.txt"
python3 -m benchmarks.run --device "$device" --out "$out/bench" 2>&1 | tee "$out/bench.log" | tail -3
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
