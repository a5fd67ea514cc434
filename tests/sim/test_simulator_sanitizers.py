"""The CUDA simulator under AddressSanitizer + UBSan and ThreadSanitizer: shared-memory overflows
and races in kernels are reported, and correct kernels (fibers, barriers, abandoned launches
included) run clean. Skipped, with the reason, where g++ has no sanitizer runtime."""

from __future__ import annotations

import pytest

from tests.sim.simbuild import line_of

CLEAN_UNDER_ASAN = ["block_sum", "bitonic", "wmma_half", "votes", "dynamic_smem_in_bounds", "recover_and_threads",
                    "async_copy_pipeline"]
CLEAN_UNDER_TSAN = ["block_sum", "grid_sum", "bitonic", "wmma_bf16", "votes", "block_max_atomic", "recover_and_threads",
                    "warp_exchange_synced", "async_copy_pipeline"]


@pytest.mark.parametrize("case", CLEAN_UNDER_ASAN)
def test_correct_kernels_are_clean_under_asan_and_ubsan(asan_cases, case):
    run = asan_cases.run(case, seed=7, shuffle="tb")
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-3000:]
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr


def test_dynamic_shared_memory_overflow_is_reported_by_asan(asan_cases):
    run = asan_cases.run("dynamic_smem_overflow")
    assert run.returncode != 0
    assert "heap-buffer-overflow" in run.stderr
    assert line_of("dyn-oob") in run.stderr


def test_static_shared_memory_overflow_is_reported_by_ubsan_bounds(asan_cases):
    run = asan_cases.run("static_smem_overflow")
    assert run.returncode != 0
    assert "out of bounds for type 'int [64]'" in run.stderr
    assert line_of("static-oob") in run.stderr


@pytest.mark.parametrize("case", CLEAN_UNDER_TSAN)
def test_correct_kernels_have_no_race_under_tsan(tsan_cases, case):
    run = tsan_cases.run(case, seed=3, shuffle="t")
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-3000:]
    assert "ThreadSanitizer" not in run.stderr


def test_check_then_act_shared_memory_race_is_reported_by_tsan(tsan_cases):
    run = tsan_cases.run("block_max_racy")
    assert run.returncode != 0
    assert "ThreadSanitizer: data race" in run.stderr
    assert line_of("race") in run.stderr


def test_missing_syncwarp_race_is_reported_by_tsan(tsan_cases):
    run = tsan_cases.run("warp_exchange_racy")
    assert run.returncode != 0
    assert "ThreadSanitizer: data race" in run.stderr
    assert line_of("warp-exchange-read") in run.stderr
