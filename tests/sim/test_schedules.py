"""The simulator's schedules and its memory model between blocks (tests/sim/programs/sim_schedules.cu).

- Each schedule follows its seed and its strategy: a trace of the order in which 4 warps ran
  changes with the seed, is the same for the same seed, and has the shape the strategy promises.
- Warp run-ahead and PCT expose, by value, a write-after-read race that uniformly random picks
  practically never do: a block reduction reused without its trailing barrier.
- The memory model between blocks (csrc/sim/global_memory.h): grid_sum.cuh's protocol (__stcg,
  release fence, atomic, acquire fence, __ldcg) passes, and each of its fences or its atomic
  removed fails the launch with a message naming the accesses and the missing half.
- Under ThreadSanitizer, blocks are ordered only by what CUDA guarantees: the same protocol with
  plain accesses is clean, and each planted bug is reported as a data race between blocks.
- A helper's barrier reached from a divergent branch is reported at the kernel's line.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.sim.simbuild import PROGRAMS, REPO, line_of

WARP_SCHEDULES = {"r": "run-ahead", "w": "round-robin", "p": "pct"}
SEEDED = ["t", *WARP_SCHEDULES]
THREADS, WARPS = 128, 4


def _trace(program, seed: int, flags: str) -> list[int]:
    run = program.run("trace", seed, flags)
    assert run.returncode == 0, run.stdout + run.stderr
    trace = [int(t) for t in run.stdout.split()]
    # Every thread logs 4 times: a schedule may reorder threads, never drop or repeat a step.
    assert sorted(trace) == sorted(list(range(THREADS)) * 4)
    return trace


def _intervals(trace: list[int]) -> list[list[int]]:
    """The trace between barriers: each thread logs twice per interval."""
    return [trace[i:i + 2 * THREADS] for i in range(0, len(trace), 2 * THREADS)]


def _warp_switches(interval: list[int]) -> int:
    warps = [t // 32 for t in interval]
    return sum(a != b for a, b in zip(warps, warps[1:]))


@pytest.mark.parametrize("flags", SEEDED)
def test_a_seeded_schedule_follows_its_seed(schedule_cases, flags):
    traces = [tuple(_trace(schedule_cases, seed, flags)) for seed in range(1, 5)]
    assert len(set(traces)) > 1, f"schedule {flags!r} ignores its seed"
    assert tuple(_trace(schedule_cases, 3, flags)) == traces[2], f"schedule {flags!r} is not reproducible"


def test_schedules_differ_from_each_other_for_one_seed(schedule_cases):
    traces = {flags: tuple(_trace(schedule_cases, 5, flags)) for flags in ["", *SEEDED]}
    assert len(set(traces.values())) == len(traces), "two schedules ran the threads in the same order"


def test_in_order_schedule_starts_the_threads_in_ascending_order(schedule_cases):
    trace = _trace(schedule_cases, 9, "")
    assert list(dict.fromkeys(trace)) == list(range(THREADS))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_run_ahead_runs_one_warp_at_a_time_between_barriers(schedule_cases, seed):
    """Each warp runs until all its lanes wait at the barrier: every interval is 4 runs of one
    warp each (3 switches), and the warp that starts varies with the seed."""
    intervals = _intervals(_trace(schedule_cases, seed, "r"))
    assert all(_warp_switches(i) == WARPS - 1 for i in intervals)
    firsts = {_intervals(_trace(schedule_cases, s, "r"))[0][0] // 32 for s in range(1, 9)}
    assert len(firsts) > 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_round_robin_steps_every_warp_in_turn(schedule_cases, seed):
    """One step (one thread up to its next switch) of each warp in a seeded cyclic order: lanes
    0-30 of every warp log once and wait at the __syncwarp, one order of the 4 warps repeated
    31 times (lane 31 completes the __syncwarp and logs twice in one step)."""
    warps = [t // 32 for t in _trace(schedule_cases, seed, "w")[:31 * WARPS]]
    cycle = warps[:WARPS]
    assert sorted(cycle) == list(range(WARPS))
    assert warps == cycle * 31


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pct_runs_by_priority_with_few_change_points(schedule_cases, seed):
    """The highest-priority warp with a ready lane runs: warps switch only when one has no ready
    lane (3 per interval) or at a change point (2 at depth 3, each adding at most 2 switches)."""
    intervals = _intervals(_trace(schedule_cases, seed, "p"))
    assert sum(_warp_switches(i) for i in intervals) <= len(intervals) * (WARPS - 1) + 2 * 2


@pytest.mark.parametrize("flags", ["r", "p"])
def test_warp_run_ahead_schedules_expose_a_missing_trailing_barrier(schedule_cases, flags):
    """A warp released from the barrier reads the partials and runs into the next call, which
    overwrites its partial before the other warps read it: wrong sums under every seed. (The
    uniformly random schedule gave the reference in 10 of 10 seeds when this was written.)"""
    for seed in range(1, 11):
        run = schedule_cases.run("reduce_twice_racy", seed, flags)
        assert run.returncode == 0 and run.stdout.startswith("differs"), f"seed {seed}: {run.stdout[:200]}"


@pytest.mark.parametrize("flags", ["", *SEEDED])
def test_reduction_with_its_trailing_barrier_is_right_under_every_schedule(schedule_cases, flags):
    for seed in range(1, 4):
        run = schedule_cases.run("reduce_twice_synced", seed, flags + "b")
        assert run.returncode == 0 and run.stdout.startswith("reference"), f"seed {seed}: {run.stdout[:200]}"


def test_helper_barrier_in_a_divergent_branch_names_the_kernel_line(schedule_cases):
    run = schedule_cases.run("scan_in_branch")
    assert run.returncode == 3, run.stdout
    assert f"{line_of('scan-branch', 'sim_schedules')}, in a helper at " in run.error
    assert "block_scan.cuh" in run.error


PLANTED = {  # case -> the half of the release/acquire pattern its message names
    "grid_sum_no_release_fence": "did not __threadfence() between the store and an atomic (the release half)",
    "grid_sum_plain_counter": "made no atomic after the fence for the reader to synchronise with (the release half)",
    "grid_sum_no_acquire_fence": "(the acquire half)",
}


@pytest.mark.parametrize("case", ["project_grid_sum", "grid_sum_fenced", *[f"plain_{c}" for c in PLANTED]])
def test_grid_sums_with_the_ordering_or_with_plain_accesses_add_up(schedule_cases, case):
    """grid_sum.cuh and its copy with both fences pass the memory model between blocks under
    every schedule and block order. The planted bugs with plain accesses give the right totals:
    blocks run one after another, and plain accesses are not checked by the model (the TSan
    cases below are)."""
    for seed, flags in [(0, ""), (4, "rb"), (5, "pb")]:
        run = schedule_cases.run(case, seed, flags)
        assert run.returncode == 0 and run.stdout.startswith("reference"), run.stdout


@pytest.mark.parametrize("case", PLANTED)
def test_memory_model_reports_each_planted_cross_block_bug(schedule_cases, case):
    """The last block's __ldcg of a partial that another block stored with __stcg, without the
    release/acquire pattern, fails the launch (not TSan: the plain build), under every block
    order, naming both accesses' lines and the missing half of the pattern."""
    for seed, flags in [(0, ""), (4, "rb"), (5, "pb")]:
        run = schedule_cases.run(case, seed, flags)
        assert run.returncode == 3, run.stdout
        assert "without the ordering CUDA requires between blocks" in run.error, run.error
        assert PLANTED[case] in run.error, run.error
        assert line_of('partial-load', 'sim_schedules') in run.error, run.error
        assert line_of('hinted-store', 'sim_schedules') in run.error, run.error
        assert "in kernel void sim_schedules::planted_grid_sum<" in run.error


@pytest.mark.parametrize("case", ["project_grid_sum", "plain_grid_sum_fenced"])
def test_grid_sum_with_both_fences_has_no_race_between_blocks(tsan_schedule_cases, case):
    run = tsan_schedule_cases.run(case, 2, "rb")
    assert run.returncode == 0 and run.stdout.startswith("reference"), run.stdout[-1000:] + run.stderr[-3000:]
    assert "ThreadSanitizer" not in run.stderr


@pytest.mark.parametrize(
    "case,kernel",
    [
        ("plain_grid_sum_no_release_fence", "planted_grid_sum<false, true, true, false>"),
        ("plain_grid_sum_plain_counter", "planted_grid_sum<true, false, true, false>"),
        ("plain_grid_sum_no_acquire_fence", "planted_grid_sum<true, true, false, false>"),
    ],
)
def test_planted_cross_block_bugs_are_reported_by_tsan(tsan_schedule_cases, case, kernel):
    """With plain accesses, which the memory model does not see, TSan's happens-before edges
    between blocks find the same bugs. Both accesses of the race are the kernel's, by threads of
    two blocks. (GCC 12's libtsan symbolizes these kernel frames without their lines: the report
    names the kernel.)"""
    run = tsan_schedule_cases.run(case, 2, "rb")
    assert run.returncode != 0
    assert "ThreadSanitizer: data race" in run.stderr
    report = run.stderr.split("ThreadSanitizer: data race", 1)[1]
    current, previous = report.split("  Previous ", 1)
    assert kernel in current.split("#1 ", 1)[0] and kernel in previous.split("#1 ", 1)[0], report[:3000]


def test_schedule_kernels_and_the_project_helpers_compile_with_nvcc(tmp_path):
    """The kernels here include csrc/cuda's helpers, whose caller-line parameters (portable.h's
    KDOPS_CALLER) must vanish under nvcc: the same source compiles there."""
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.path.exists(nvcc):
        nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    cmd = [nvcc, "-std=c++20", "-arch=sm_80", f"-I{REPO}", f"-I{REPO / 'csrc'}", "-c", "-x", "cu",
           str(PROGRAMS / "sim_schedules.cu"), "-o", str(tmp_path / "sim_schedules.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
