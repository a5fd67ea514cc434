"""The access recorder (csrc/sim/access_record.h) on warp accesses whose shared-memory wavefronts
and global sectors are known from the hardware's rules: 32 banks of 4 bytes, one phase per warp for
accesses up to 4 bytes, per half-warp for 8 bytes, per quarter-warp for 16 bytes and ldmatrix's 8
rows; 32-byte global sectors. Each count is checked exactly."""

from __future__ import annotations

import pytest

from tests.sim.simbuild import Builder, Program, access_report, line_of



@pytest.fixture(scope="module")
def recorded(sim_builder: Builder) -> Program:
    return sim_builder.program("sim_access", "record")


def counts(program: Program, case: str, marker: str, space: str) -> tuple[int, int, int]:
    """(requests, wavefronts or sectors, ideal) of the accesses to `space` at the @marker line."""
    run = program.run(case)
    assert run.returncode == 0, run.stdout + run.stderr
    site = f"tests/sim/programs/{line_of(marker, 'sim_access')}"
    rows = [r for r in access_report(run.stdout, program.path) if r["site"] == site and r["space"] == space]
    assert rows, f"no {space} access recorded at {site}:\n{run.stdout}"
    unit = "wavefronts" if space == "shared" else "sectors"
    return sum(r["requests"] for r in rows), sum(r[unit] for r in rows), sum(r["ideal"] for r in rows)


@pytest.mark.parametrize("case, wavefronts", [
    ("shared_stride_1", 1),    # 32 words in 32 banks
    ("shared_stride_2", 2),    # 2-way: banks 0, 2, ..., 30 twice each
    ("shared_stride_32", 32),  # 32-way: every word in bank 0
    ("shared_stride_33", 1),   # the padded stride: bank l for lane l
    ("shared_broadcast", 1),   # one word for all lanes
])
def test_shared_4_byte_loads(recorded: Program, case: str, wavefronts: int) -> None:
    assert counts(recorded, case, "shared-word", "shared") == (1, wavefronts, 1)


@pytest.mark.parametrize("case, marker, wavefronts, ideal", [
    ("shared_float4", "shared-float4", 4, 4),           # 4 quarter-warp phases of 128 bytes
    ("shared_float4_stride_2", "shared-float4", 8, 4),  # 32-byte stride: 2-way in each phase
    ("shared_float2", "shared-float2", 2, 2),           # 2 half-warp phases of 128 bytes
    ("shared_uint4_fields", "shared-uint4", 4, 4),      # g++'s four 4-byte stores counted as one 16-byte
])
def test_shared_vector_loads(recorded: Program, case: str, marker: str, wavefronts: int, ideal: int) -> None:
    assert counts(recorded, case, marker, "shared") == (1, wavefronts, ideal)


@pytest.mark.parametrize("case, wavefronts", [
    ("ldmatrix_stride_128B", 32),  # each phase's 8 rows in the same 4 banks: 8-way, 4 phases
    ("ldmatrix_stride_144B", 4),   # padded by 16 bytes: each phase's rows in 8 distinct bank groups
])
def test_ldmatrix_phases(recorded: Program, case: str, wavefronts: int) -> None:
    assert counts(recorded, case, "ldmatrix", "shared") == (1, wavefronts, 4)


def test_cp_async_counts_both_sides(recorded: Program) -> None:
    assert counts(recorded, "cp_async", "cp-async", "shared") == (1, 4, 4)  # 16-byte stores: 4 phases
    assert counts(recorded, "cp_async", "cp-async", "global") == (1, 16, 16)  # 512 contiguous bytes


@pytest.mark.parametrize("case, sectors, ideal", [
    ("global_stride_1", 4, 4),    # 128 aligned bytes
    ("global_offset_1", 5, 4),    # the same, 4 bytes off alignment: one more sector
    ("global_stride_32", 32, 4),  # one sector per lane
    ("global_broadcast", 1, 1),   # one word for all lanes
])
@pytest.mark.parametrize("marker", ["global-load", "global-ldcg"])
def test_global_sectors(recorded: Program, case: str, sectors: int, ideal: int, marker: str) -> None:
    assert counts(recorded, case, marker, "global") == (1, sectors, ideal)


def test_global_store_sectors(recorded: Program) -> None:
    assert counts(recorded, "global_stride_32", "global-store", "global") == (1, 4, 4)


def test_off_by_default(sim_builder: Builder) -> None:
    """The ordinary build compiles no recorder: same results, no report."""
    run = sim_builder.program("sim_access", "plain").run("shared_stride_32")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "kdops.sim.access" not in run.stdout
