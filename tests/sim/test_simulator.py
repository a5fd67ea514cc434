"""The CUDA simulator's own tests: correct kernels give the reference under every thread and
block order, and every check catches its planted bug (tests/sim/programs/sim_cases.cu).

The case programs compare with their CPU references themselves (exit 4 on a mismatch), print
their results bit for bit, and print "ERROR: <message>" (exit 3) when the simulator raises.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.sim.simbuild import PROGRAMS, REPO, line_of

# (seed, shuffles): the default ascending order, then shuffled threads and/or blocks.
ORDERS = [(0, ""), (1, "t"), (2, "b"), (3, "tb"), (4, "tb"), (5, "tb")]

CORRECT_CASES = [
    "block_sum",  # shuffles, static shared memory, barriers, many blocks
    "grid_sum",  # atomics, __threadfence, last-block-done
    "bitonic",  # dynamic shared memory, 55 barriers, ties
    "wmma_half",  # WMMA 16x16x16 fp16 -> fp32, equal to the exact product
    "wmma_bf16",
    "wmma_tf32",  # m16n16k8 with __float_to_tf32
    "wmma_s8",  # int8 -> int32, exact; col-major accumulator load
    "layout",  # 3-D blocks, 2-D grid
    "votes",  # __syncthreads_count/and/or, ballot, any/all, reduce, shuffle widths and masks
    "reverse_synced",
    "warp_exchange_synced",  # __syncwarp, from two sites
    "warp_sum_width32",
    "dynamic_smem_initialised",
    "async_copy_waited",  # cp.async, waited for before the barrier
    "async_copy_pipeline",  # two-stage cp.async double buffer
]


@pytest.mark.parametrize("case", CORRECT_CASES)
def test_correct_kernel_matches_reference_in_every_order(cases, case):
    outputs = set()
    for seed, shuffle in ORDERS:
        run = cases.run(case, seed, shuffle)
        assert run.returncode == 0, f"{case} seed={seed} {shuffle!r}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
        assert "differs" not in run.stdout
        outputs.add(run.stdout)
    assert len(outputs) == 1, f"{case}: results depend on the thread/block order"


def test_missing_barrier_gives_order_dependent_wrong_results(cases):
    runs = [cases.run("reverse_missing_barrier", seed, shuffle) for seed, shuffle in ORDERS]
    assert all(r.returncode == 0 for r in runs)
    assert all(r.stdout.startswith("differs") for r in runs)
    assert len({r.stdout for r in runs}) > 1, "shuffled orders must change a racy kernel's result"


@pytest.mark.parametrize("case", ["async_copy_unwaited", "async_copy_pipeline_waits_too_little"])
def test_reading_a_cp_async_copy_before_its_wait_gives_wrong_results(cases, case):
    """The simulated cp.async lands a copy only at the wait that covers it, and poisons the
    destination until then (0xFF bytes: -1 in an int): a read before that wait sees it, in
    every order."""
    runs = [cases.run(case, seed, shuffle) for seed, shuffle in ORDERS]
    assert all(r.returncode == 0 and r.stdout.startswith("differs") for r in runs), runs[0].stdout
    if case == "async_copy_unwaited":  # (the pipeline's sums add the -1s to landed tiles)
        # Copies land when their thread exits: threads that read after some exited see those.
        assert all("-1" in r.stdout.split() for r in runs)


def test_missing_syncwarp_gives_wrong_results(cases):
    runs = [cases.run("warp_exchange_racy", seed, shuffle) for seed, shuffle in ORDERS]
    assert all(r.returncode == 0 and r.stdout.startswith("differs") for r in runs)


def test_divergent_barrier_names_both_lines(cases):
    for seed, shuffle in ORDERS:
        run = cases.run("divergent_barrier", seed, shuffle)
        assert run.returncode == 3, run.stdout
        assert "barrier divergence" in run.error
        assert line_of("divergent-a") in run.error and line_of("divergent-b") in run.error
        assert "block (0,0,0)" in run.error or "block (1,0,0)" in run.error
        assert "in kernel sim_cases::divergent_barrier(int*)" in run.error


def test_thread_exit_while_others_wait_at_barrier(cases):
    for seed, shuffle in ORDERS:
        run = cases.run("exit_before_barrier", seed, shuffle)
        assert run.returncode == 3, run.stdout
        assert "exit" in run.error and line_of("exit-barrier") in run.error


def test_shuffle_width_not_a_power_of_two_raises(cases):
    run = cases.run("warp_sum_width24")
    assert run.returncode == 3
    assert "width 24" in run.error and line_of("width") in run.error


def test_shuffle_width_16_in_a_32_wide_reduction_is_wrong(cases):
    run = cases.run("warp_sum_width16")
    assert run.returncode == 0 and run.stdout.startswith("differs")


@pytest.mark.parametrize("case", ["shuffle_in_branch", "shuffle_in_branch_then_barrier"])
def test_full_mask_shuffle_in_half_warp_branch_raises(cases, case):
    marker = "branch-shuffle" if case == "shuffle_in_branch" else "branch-shuffle-2"
    for seed, shuffle in ORDERS:
        run = cases.run(case, seed, shuffle)
        assert run.returncode == 3, run.stdout
        assert "0xffffffff" in run.error and line_of(marker) in run.error
        if case == "shuffle_in_branch_then_barrier":
            assert "deadlock" in run.error and line_of("branch-barrier") in run.error


def test_mask_omitting_the_caller_raises(cases):
    run = cases.run("mask_omits_caller")
    assert run.returncode == 3
    assert "omits the calling lane 16" in run.error and line_of("omits") in run.error


def test_shuffle_reading_a_lane_outside_the_mask_raises(cases):
    run = cases.run("reads_inactive_lane")
    assert run.returncode == 3
    assert "reads lane 16" in run.error and line_of("inactive") in run.error


def test_lanes_calling_different_collectives_raise(cases):
    for seed, shuffle in ORDERS:
        run = cases.run("different_collectives", seed, shuffle)
        assert run.returncode == 3, run.stdout
        assert line_of("coll-a") in run.error and line_of("coll-b") in run.error


def test_lane_dependent_wmma_fragment_edit_raises(cases):
    run = cases.run("wmma_lane_edit")
    assert run.returncode == 3
    assert "fragment differs" in run.error and line_of("wmma-store") in run.error


def test_uninitialised_dynamic_shared_memory_reads_poison(cases):
    runs = [cases.run("dynamic_smem_uninitialised", seed, shuffle) for seed, shuffle in ORDERS]
    assert all(r.returncode == 0 for r in runs)
    assert {r.stdout for r in runs} == {"-1 " * 64 + "\n"}  # 0xFFFFFFFF in every int, in every order
    assert cases.run("dynamic_smem_initialised").stdout == "".join(f"{i} " for i in range(64)) + "\n"


def test_static_shared_memory_is_poisoned_at_each_block_start(cases):
    """Each of two blocks reads the word before writing 7 to it: the block that runs second sees
    0xFFFFFFFF, not the 7 the first one left, in every order."""
    runs = [cases.run("static_smem_read_first", seed, shuffle) for seed, shuffle in ORDERS]
    assert all(r.returncode == 0 for r in runs)
    assert {r.stdout for r in runs} == {"-1 " * 64 + "\n"}


def test_dynamic_shared_memory_overflow_is_caught_without_sanitizers(cases):
    """Canaries around the buffer catch a write just past the end in every simulated run (the
    ASan build, in test_simulator_sanitizers.py, names the thread and line)."""
    run = cases.run("dynamic_smem_overflow")
    assert run.returncode == 3
    assert "out-of-bounds write to dynamic shared memory: byte 0 past the end of the 256-byte buffer" in run.error
    assert "sim_cases::dynamic_smem_overflow" in run.error
    assert cases.run("dynamic_smem_in_bounds").returncode == 0


def test_launch_configuration_checks(cases):
    run = cases.run("launch_checks")
    assert run.returncode == 0, run.stdout + run.stderr


def test_runtime_recovers_after_an_error_and_serves_two_os_threads(cases):
    run = cases.run("recover_and_threads")
    assert run.returncode == 0, run.stdout + run.stderr


def test_memory_fault_in_a_kernel_fails_its_launch_and_the_next_runs(cases):
    """A wild read in thread 5 is reported as the launch's error, naming the fault's address,
    kernel, block and thread, instead of ending the process; the next launch gives its reference.
    (Under ASan and TSan their handlers report the fault instead.)"""
    run = cases.run("fault_then_recover")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("FAULT: kdops.sim: memory fault in the kernel: SIGSEGV at address 0x40")
    fault, rest = run.stdout.split("\nreference\n", 1)
    assert "in kernel sim_cases::wild_read(int*), block (0,0,0), thread (5,0,0)" in fault


@pytest.mark.parametrize("schedule", ["", "t", "r"])
def test_wmma_store_is_visible_to_other_lanes_only_after_a_barrier(cases, schedule):
    """wmma::store_matrix_sync: each lane stores its own share of the tile as it resumes, so a
    lane reading another lane's element before a __syncwarp reads what was there before (-1),
    under every schedule; with the __syncwarp every lane reads the stored 2."""
    synced = cases.run("wmma_store_then_read_synced", 1, schedule)
    assert synced.returncode == 0 and synced.stdout.split() == ["2"] * 32, synced.stdout
    racy = cases.run("wmma_store_then_read_racy", 1, schedule)
    assert racy.returncode == 0 and "-1" in racy.stdout.split(), racy.stdout


def test_write_past_the_end_of_a_buffer_fails_its_launch(cases):
    """A kernel writing one element past a buffer of the guarded heap (torch's CPU allocator in
    kdops._C_sim) fails that launch with a message naming the buffer and the kernel, instead of
    corrupting the host heap; the guard is repaired, so the next launch runs clean."""
    run = cases.run("write_past_end")
    assert run.returncode == 0, run.stdout + run.stderr
    error, rest = run.stdout.split("\n", 1)
    assert error.startswith("ERROR: kdops.sim: out-of-bounds write to global memory: a write past the end of the "
                            "40-byte buffer at 0x"), error
    assert "(its guard byte at offset 40 was overwritten)" in error
    assert "in kernel sim_cases::write_past_end(sim_cases::Output)" in rest
    assert rest.rstrip().endswith("then clean")


def test_half_and_bfloat16_conversions_are_bit_exact(cases):
    if "f16c" not in open("/proc/cpuinfo").read():
        pytest.skip("the reference float->half conversion needs the CPU's F16C instructions")
    run = cases.run("conversions")
    assert run.returncode == 0, run.stdout


def test_case_kernels_compile_unchanged_with_nvcc(tmp_path):
    """What the simulator runs is real CUDA: the same kernel source (KDOPS_DYNAMIC_SMEM,
    alignas before __shared__, WMMA incl. tf32 and s8, <mma.h>) compiles with nvcc."""
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.path.exists(nvcc):
        nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    cmd = [nvcc, "-std=c++20", "-arch=sm_80", f"-I{REPO}", "-c", "-x", "cu", str(PROGRAMS / "sim_cases.cu"),
           "-o", str(tmp_path / "sim_cases.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
