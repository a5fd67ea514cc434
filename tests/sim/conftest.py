"""Fixtures of the CUDA simulator's own tests: the test programs, built once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.sim.simbuild import Builder, Program


@pytest.fixture(scope="session")
def sim_builder() -> Iterator[Builder]:
    builder = Builder()
    yield builder
    shutil.rmtree(builder.out, ignore_errors=True)


def _program(builder: Builder, mode: str, name: str = "sim_cases") -> Program:
    why_not = builder.supported(mode)
    if why_not:
        pytest.skip(why_not)
    return builder.program(name, mode)


@pytest.fixture(scope="session")
def cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "plain")


@pytest.fixture(scope="session")
def asan_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "asan")


@pytest.fixture(scope="session")
def tsan_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "tsan")


@pytest.fixture(scope="session")
def schedule_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "plain", "sim_schedules")


@pytest.fixture(scope="session")
def tsan_schedule_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "tsan", "sim_schedules")


@pytest.fixture(scope="session")
def mma_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "plain", "sim_mma_ptx")


@pytest.fixture(scope="session")
def asan_mma_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "asan", "sim_mma_ptx")
