"""Fixtures of the CUDA simulator's own tests: the test programs, built once per session."""

from __future__ import annotations

import pytest

from tests.sim.simbuild import Builder, Program


@pytest.fixture(scope="session")
def sim_builder() -> Builder:
    return Builder()


def _program(builder: Builder, mode: str) -> Program:
    why_not = builder.supported(mode)
    if why_not:
        pytest.skip(why_not)
    return builder.program("sim_cases", mode)


@pytest.fixture(scope="session")
def cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "plain")


@pytest.fixture(scope="session")
def asan_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "asan")


@pytest.fixture(scope="session")
def tsan_cases(sim_builder: Builder) -> Program:
    return _program(sim_builder, "tsan")
