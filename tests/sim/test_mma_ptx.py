"""The simulated ldmatrix, mma.sync m16n8k16 (fp16/bf16), m16n8k32 (s8) and max.NaN.f32 (csrc/sim/mma_ptx.h) against scalar references
written from the PTX ISA's fragment tables, and kernels assuming another layout, which must get
wrong results (tests/sim/programs/sim_mma_ptx.cu compares and prints "ok" or "differs")."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.sim.simbuild import PROGRAMS, REPO, line_of

# (seed, shuffles): the default order, then shuffled threads and/or blocks.
ORDERS = [(0, ""), (1, "t"), (2, "tb")]

DOCUMENTED = [
    *(f"ldmatrix_x{n}{t}" for n in (1, 2, 4) for t in ("", "_trans")),  # random row address per lane
    "mma_f16",  # registers packed by the fragment tables from global memory
    "mma_bf16",
    "ldmatrix_mma_f16",  # A by ldmatrix.x4, B (stored [n][k]) by ldmatrix.x2: the MaxSim forward's feed
    "ldmatrix_mma_bf16",
    "ldmatrix_trans_mma_f16",  # B stored [k][n], by ldmatrix.x2.trans
    "ldmatrix_trans_mma_bf16",
    "mma_s8",  # m16n8k32 .s8: 4 int8 a register, exact int32 sums (every int8 value, -128 included)
    "ldmatrix_mma_s8",  # A by ldmatrix.x4, B (stored [n][k]) by ldmatrix.x2: the int8 MaxSim forward's feed
    "max_nan",  # max.NaN.f32 on special-value pairs (NaNs, infinities, signed zeros) and random ones, bit for bit
]


@pytest.mark.parametrize("case", DOCUMENTED)
def test_instruction_matches_scalar_reference_in_every_order(mma_cases, case):
    outputs = set()
    for seed, shuffle in ORDERS:
        run = mma_cases.run(case, seed, shuffle)
        assert run.returncode == 0, f"{case} seed={seed} {shuffle!r}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
        assert run.stdout.startswith("ok\n"), run.stdout[:300]
        outputs.add(run.stdout)
    assert len(outputs) == 1, f"{case}: results depend on the thread/block order"


@pytest.mark.parametrize("case", [
    "mma_wrong_accumulator_layout",  # D read as if lane t held columns t % 4 and t % 4 + 4 of row t / 4
    "mma_wrong_a_layout",  # a[1] taken as columns 8.. of row g (it is row g + 8)
    "ldmatrix_wrong_lane_order",  # A's four 8x8 blocks addressed column block first
    "mma_s8_wrong_accumulator_layout",  # the s32 D read with the misreading above
    "mma_s8_wrong_a_layout",  # a[1] taken as bytes 16.. of row g (it is row g + 8, bytes 4 tig..)
])
def test_code_assuming_another_layout_gets_wrong_results(mma_cases, case):
    """The layouts are not symmetric by accident: each plausible misreading changes the product."""
    run = mma_cases.run(case)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("differs\n"), run.stdout[:300]


def test_mma_reached_by_half_the_warp_raises(mma_cases):
    run = mma_cases.run("mma_half_warp")
    assert run.returncode == 3, run.stdout
    assert "mma.sync.m16n8k16" in run.error and line_of("half-warp-mma", "sim_mma_ptx") in run.error


def test_misaligned_ldmatrix_row_raises(mma_cases):
    run = mma_cases.run("ldmatrix_misaligned")
    assert run.returncode == 3, run.stdout
    assert "16-byte aligned" in run.error and line_of("misaligned-ldmatrix", "sim_mma_ptx") in run.error


def test_instruction_kernels_compile_with_nvcc_and_ptxas(tmp_path):
    """The same kernels, with the inline PTX that csrc/cuda/mma_ptx.cuh emits under nvcc, assemble for sm_80."""
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.path.exists(nvcc):
        nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    cmd = [nvcc, "-std=c++20", "-arch=sm_80", f"-I{REPO}", f"-I{REPO / 'csrc'}", "-c", "-x", "cu",
           str(PROGRAMS / "sim_mma_ptx.cu"), "-o", str(tmp_path / "sim_mma_ptx.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("case", ["ldmatrix_x4_trans", "ldmatrix_mma_bf16", "ldmatrix_trans_mma_f16"])
def test_instructions_are_clean_under_asan_and_ubsan(asan_mma_cases, case):
    """The collectives read each lane's row addresses and registers only (16 bytes a row, 4 or 2
    registers a lane), within the buffers the kernel gave them."""
    run = asan_mma_cases.run(case, seed=3, shuffle="t")
    assert run.returncode == 0 and run.stdout.startswith("ok\n"), run.stdout[-1000:] + run.stderr[-3000:]
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr
