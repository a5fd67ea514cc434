#!/usr/bin/env bash
# The GPU check, in one 10-minute call of the device tool (a lent GPU comes with 15 minutes of
# device time in all, its start and this build included), on a machine with a GPU, nvcc and torch:
#   1. build kdops._C in place for this GPU's arch only (its compute capability from nvidia-smi),
#      without the simulator extension;
#   2. the CUDA test cases (pytest -k cuda; the CPU and simulated ones are CI's), at most 150 s;
#   3. MaxSim forward and forward + backward of kdops and of both peers, timed at the performance
#      model's shapes, measured beside predicted (python -m benchmarks.gpu_perf.measure), at most 240 s;
#   4. MaxSim for serving (benchmarks/cases_maxsim_serving.py: kdops' int8 / fp8 / residual rows
#      beside flash-maxsim's int8 and late-interaction-kernels' fp8 and PLAID kernels), --quick
#      (no torch.compile, 0.1 s per implementation), at most 90 s, last so a cut loses only it.
# Logs and results go to OUT_DIR (the serving tables in OUT_DIR/serving; the device tool brings back
# folders up to 16 deep).
#
#   benchmarks/gpu_check.sh OUT_DIR
#   KDOPS_CHECK_DEVICE=cpu benchmarks/gpu_check.sh OUT_DIR    # dry run on a CPU: skips the build
#                                                             # (uses the kdops/_C*.so already here)
#
# The peers travel as wheels in .whl/ (`make peer-wheels`: flash-maxsim 0.3.0 and
# late-interaction-kernels 0.4.5, pip download --no-deps), installed into a private target. .whl/
# is git-ignored, so the device tool copies it only when asked: run(command=..., carry=[".whl"]).
# Time budget and how it was estimated: docs/gpu-model.md, "The GPU check".
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
py=${PYTHON:-python3}
device=${KDOPS_CHECK_DEVICE:-cuda}
status=0
start=$SECONDS

if compgen -G ".whl/*.whl" > /dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/kdops-peers .whl/*.whl \
    && export PYTHONPATH=/tmp/kdops-peers${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl/*.whl: the peers are timed only if importable" | tee "$out/summary.txt"
fi

echo "== build" | tee -a "$out/summary.txt"
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv | tee -a "$out/summary.txt"
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')
  # One arch, all cores: nvcc compiles each .cu once instead of once per arch of the default list.
  if ! TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=$(nproc) KDOPS_SIM=0 KDOPS_CUDA=1 \
      $py setup.py -q build_ext --inplace --build-temp build/gpu-check > "$out/build.log" 2>&1; then
    tail -40 "$out/build.log"; echo "build failed" >> "$out/summary.txt"; exit 1
  fi
else
  echo "dry run ($device): build skipped, the kdops/_C*.so here are used" | tee -a "$out/summary.txt"
fi
echo "build done at $((SECONDS - start)) s" | tee -a "$out/summary.txt"
$py -m kdops.info | tee -a "$out/summary.txt"

echo "== CUDA tests" | tee -a "$out/summary.txt"
timeout 150 $py -m pytest -q -p no:cacheprovider -m "not sim" -k cuda tests 2>&1 | tee "$out/tests.log" | tail -5
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
tail -1 "$out/tests.log" >> "$out/summary.txt"
echo "tests done at $((SECONDS - start)) s" | tee -a "$out/summary.txt"

echo "== MaxSim measured vs predicted" | tee -a "$out/summary.txt"
timeout 240 $py -m benchmarks.gpu_perf.measure --device "$device" --out "$out" 2> "$out/measure.log" | tail -20
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "measure done at $((SECONDS - start)) s" | tee -a "$out/summary.txt"

echo "== MaxSim for serving" | tee -a "$out/summary.txt"
timeout 90 $py -m benchmarks.run --device "$device" --ops maxsim_serving --quick --out "$out/serving" \
  > "$out/serving.log" 2>&1
[ $? -eq 0 ] || status=1
echo "serving done at $((SECONDS - start)) s" | tee -a "$out/summary.txt"
exit $status
