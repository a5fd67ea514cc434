"""The SASS-driven GPU model (benchmarks/gpu_perf): the parser's counts on a known listing, the
kdops profiles against the current kernel source, the calibration error as computed from the
published data, the tables, and gpu_model_lists' launch counts against test_launch_counts."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_model_lists
from benchmarks.gpu_perf import __main__ as cli
from benchmarks.gpu_perf import accesses, backward, hw, kdops_profile, kernels, model, report, sass
from benchmarks.gpu_perf.compile_all import PROFILES

# A loop (0x0020..0x0080) holding an inner loop (0x0040..0x0060), then straight-line code; two
# backward branches to one head (0x0040) are one loop.
LISTING = """
        Function : tiny
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   LDSM.16.M88.4 R8, [R0] ;
        /*0040*/                   HMMA.16816.F32.BF16 R12, R8, R4, R12 ;
        /*0050*/               @P0 BRA 0x40 ;
        /*0060*/              @!P1 BRA 0x40 ;
        /*0070*/                   FMNMX R20, R12, R20, !PT ;
        /*0080*/               @P2 BRA 0x20 ;
        /*0090*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT ;
        /*00a0*/                   STS.64 [R0], R20 ;
        /*00b0*/                   EXIT ;
        /*00c0*/                   BRA 0xc0 ;
"""


def test_parser_classes_loops_and_bytes():
    f = sass.parse(LISTING)["tiny"]
    assert len(f.instrs) == 13  # the trap after EXIT (a branch to itself) is no loop
    assert [(l.start, l.end) for l in f.loops] == [(0x20, 0x80)]
    inner = f.loops[0].children
    assert [(l.start, l.end) for l in inner] == [(0x40, 0x60)]
    assert dict(f.body(inner[0])) == {"tensor": 1, "branch_sync": 2, "all": 3}
    outer = f.body(f.loops[0])  # without the inner loop
    assert outer["all"] == 4 and outer["global"] == 1 and outer["ldsm"] == 1 and outer["shared"] == 1 and outer["fp"] == 1
    t = sass.totals(f, 0, 0xb0)
    assert t["fma"] == 16 * 8 * 16 + 64 * 128 * 16 // 4  # HMMA m16n8k16 + a quarter of the warpgroup's wgmma
    # LDSM .4, STS.64, the wgmma's A (64x16) and B (128x16) 16-bit operands from shared, a quarter per warp
    assert t["smem_bytes"] == 512 + 256 + (64 * 16 * 2 + 128 * 16 * 2) // 4 and t["gmem_bytes"] == 512  # LDG.128
    s = sass.summary(f)
    assert s["loops"] == 1 and s["loop"]["all"] == 7 and s["straight"]["all"] == 6 and s["straight"]["hgmma"] == 1


# A loop (0x10..0x30) whose shuffle has a divergence fallback after EXIT (0x60) that branches back
# to the loop's head: as parsed, that head's loop stretches to 0x70; without fallbacks it ends at 0x30.
FALLBACK_LISTING = """
        Function : shuffled
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0020*/                   SHFL.IDX PT, R5, R4, RZ, 0x1f ;
        /*0030*/               @P0 BRA 0x10 ;
        /*0040*/                   STG.E desc[UR4][R2.64], R5 ;
        /*0050*/                   EXIT ;
        /*0060*/                   WARPSYNC R6 ;
        /*0070*/                   BRA 0x10 ;
"""


def test_divergence_fallbacks_are_not_loops():
    f = sass.parse(FALLBACK_LISTING)["shuffled"]
    assert [(l.start, l.end) for l in f.loops] == [(0x10, 0x70)]
    g = sass.without_fallbacks(f)
    assert [(l.start, l.end) for l in g.loops] == [(0x10, 0x30)] and g.body(g.loops[0])["all"] == 3


@pytest.fixture(scope="module")
def profiles():
    return json.loads(PROFILES.read_text())


def test_cached_kdops_profiles_match_the_kernel_source(profiles):
    """A kernel change (issue 27, part 2) makes these stale: rerun `python -m benchmarks.gpu_perf`."""
    ours = {k: v for k, v in profiles.items() if k.startswith("kdops|")}
    assert {k.split("|")[1] for k in ours} == {"sm_80", "sm_90"}
    assert {v["source"] for v in ours.values()} == {kdops_profile.source_hash()}


def test_cached_access_counts_match_the_kernel_source(profiles):
    """The simulator's wavefront and sector counts (accesses.py) are of the current kernels: rerun
    `python -m benchmarks.gpu_perf` (or `python -m benchmarks.gpu_perf.accesses`) after a change."""
    counted = {k: v for k, v in profiles.items() if k.startswith("accesses|kdops|")}
    assert set(counted) == {f"accesses|kdops|{d}" for d in accesses.DTYPES}
    assert {v["source"] for v in counted.values()} == {kdops_profile.source_hash()}


def test_cached_backward_profiles_match_the_kernel_source(profiles):
    """The backward's SASS summaries (backward.py) are of the current dQ and dD kernels."""
    ours = {k: v for k, v in profiles.items() if k.startswith("kdops-bwd|")}
    assert set(ours) == {f"kdops-bwd|sm_{a}|{k}" for a in (80, 90) for k in ("dq", "dd")}
    assert {v["source"] for v in ours.values()} == {kdops_profile.source_hash()}


def test_backward_work_units_are_the_loops_the_source_describes(profiles):
    """The loops backward.py picks hold what the kernels' source puts there, on both archs: a dQ
    column step issues kInFlight = 4 sixteen-byte D-row loads per lane and 4 x 8 FMAs; a dD scan
    step loads one int32 index per lane; a dD hit batch adds 4 hits x d / 32 = 16 FMAs per lane
    (bf16 rows, fp32 sums)."""
    for arch in (80, 90):
        dq, dd = profiles[f"kdops-bwd|sm_{arch}|dq"], profiles[f"kdops-bwd|sm_{arch}|dd"]
        assert dq["step"]["gmem_bytes"] == 4 * 512 and dq["step"]["fp"] >= 32
        assert dd["scan"]["gmem_bytes"] == 32 * 4 and dd["batch"]["fp"] >= 16
        assert dq["registers"] <= 128 and dd["registers"] <= 128  # launch bounds: 4 blocks of 128 threads


def test_backward_predictions_are_at_least_the_memory_minimum(profiles):
    """Every predicted backward time is at or above its memory minimum (the model's HBM term moves
    the same bytes at a share of the peak); dD adds the count and combine kernels (every case has
    1,024 entries per doc, past the 256 that split)."""
    for g in hw.GPUS.values():
        for c in backward.CASES:
            assert backward.query_grad(profiles, c, g).seconds >= backward.query_grad_bytes(c) / g.hbm_bytes_per_s
            kernel, total = backward.doc_grad(profiles, c, g)
            assert total > kernel.seconds >= backward.doc_grad_bytes(c) / g.hbm_bytes_per_s


def test_counted_conflicts(profiles):
    """What the recorder counted in the cache: the 16-bit forward's ldmatrix loads are conflict-free
    (rows padded to an odd number of 16-byte units, maxsim_mma.cuh), every global access is
    coalesced, and the TF32 kernel's similarity buffer (row stride 68 floats, 4 mod 32) is not."""
    for dtype in ("fp16", "bf16"):
        sites = profiles[f"accesses|kdops|{dtype}"]["sites"]
        ldsm = [t for site, t in sites.items() if " shared ldmatrix " in site]
        assert ldsm and all(t["units"] == t["ideal"] for t in ldsm)
    for dtype in accesses.DTYPES:
        assert accesses.ratios(profiles, dtype)[1] == 1.0
    fold = [t for site, t in profiles["accesses|kdops|tf32"]["sites"].items()
            if site.startswith("csrc/cuda/maxsim_tensor_core.cuh:") and " shared load " in site]
    assert any(t["units"] == 2 * t["ideal"] for t in fold)  # the similarity buffer's 2-way conflict
    assert accesses.ratios(profiles, "tf32")[0] > 1.0


def test_conflicts_and_sectors_scale_the_shared_and_l2_bounds():
    per_program = {"smem_bytes": 1 << 20, "gmem_bytes": 1 << 20}
    base = dict(programs=132, warps=4, registers=64, shared=1024, per_program=per_program, iterations=1, stages=2,
                hbm_bytes=0)
    clean = model.predict(model.Launch(**base), hw.H100).parts
    counted = model.predict(model.Launch(**base, wavefronts_per_ideal=2.0, sectors_per_ideal=1.5), hw.H100).parts
    assert counted["shared"] == pytest.approx(2 * clean["shared"])
    assert counted["L2"] == pytest.approx(1.5 * clean["L2"])
    assert counted["issue"] == clean["issue"]


def test_kdops_16bit_forward_has_tensor_cores_and_fp16_ldmatrix(profiles):
    for arch in ("sm_80", "sm_90"):
        fp16, bf16 = profiles[f"kdops|{arch}|fp16|argmax0"], profiles[f"kdops|{arch}|bf16|argmax0"]
        assert any(o.startswith("HMMA") for o in fp16["opcodes"]) and any(o.startswith("LDSM") for o in fp16["opcodes"])
        assert any(o.startswith("HMMA") for o in bf16["opcodes"])
        # one tile's MMA work per warp is 16 rows x 64 columns x d 128, whatever the unrolling
        assert fp16["tile_lo"]["fma"] == bf16["tile_lo"]["fma"] == 16 * 64 * 128


def test_occupancy_from_registers_and_shared_memory():
    """168 registers (the old WMMA forward's) and kdops' forward's 71 KB: 3 blocks on an H100 SM (by both),
    2 on an A100 (shared memory)."""
    launch = model.Launch(programs=1, warps=4, registers=168, shared=kdops_profile.SHARED_16BIT, per_program={},
                          iterations=1, stages=2, hbm_bytes=0)
    assert model.resident_blocks(launch, hw.H100) == 3
    assert model.resident_blocks(launch, hw.A100) == 2


def test_calibration_error_is_computed_from_the_published_points(profiles):
    rows = report.calibration(profiles)
    published = json.loads(report.PUBLISHED.read_text())["points"]
    assert len(rows) == len(published)  # every published point has its compiled candidates
    for r in rows:
        assert r["log_ratio"] == pytest.approx(math.log(r["predicted_ms"] / r["ms"]))
    err = report.errors(rows)
    flash_h100 = sorted(abs(r["log_ratio"]) for r in rows if r["peer"] == "flash-maxsim" and r["arch"] == 90)
    assert err[("flash-maxsim", 90)] == (flash_h100[2], flash_h100[-1], 5)


def test_errors_median_and_max():
    rows = [{"peer": "p", "arch": 90, "log_ratio": x} for x in (math.log(2), -math.log(4), math.log(1.5))]
    assert report.errors(rows)[("p", 90)] == pytest.approx((math.log(2), math.log(4), 3))


def test_leave_one_out_scaling_uses_the_other_points_only():
    """Three points at ratios 1/2, 1/2, 1/8: each is scaled by the median of the other two."""
    rows = [{"arch": 90, "log_ratio": math.log(x)} for x in (0.5, 0.5, 0.125)]
    scale, med, mx = report.loo_scaled_errors(rows, 90)
    assert scale == pytest.approx(2.0)
    # point 1 and 2: others' median ln = (ln .5 + ln .125) / 2 -> |ln .5 - that| = ln 2; point 3: |ln .125 - ln .5| = ln 4
    assert (med, mx) == pytest.approx((math.log(2), math.log(4)))


def test_quick_command_prints_both_tables(capsys):
    assert cli.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "## Calibration" in out and out.count("## Side by side") == 2
    for s in report.SIDE_BY_SIDE:
        assert out.count(f"| {s.name} |") == 2  # one row per GPU
    assert "PREDICTED" in out


def test_docs_page_shows_what_the_command_prints(capsys):
    """docs/gpu-model.md embeds `python -m benchmarks.gpu_perf --quick` verbatim (headings one level
    down): a changed cache or model without the page regenerated fails here."""
    cli.main(["--quick"])
    out = capsys.readouterr().out.replace("## ", "### ").rstrip()
    page = (Path(__file__).resolve().parent.parent / "docs" / "gpu-model.md").read_text()
    assert out in page


def test_readme_table_is_what_the_command_prints(capsys):
    """README.md's side-by-side table is `python -m benchmarks.gpu_perf --quick --readme` verbatim
    (predicted, with the calibration error): a changed cache or model fails here until it is pasted."""
    assert cli.main(["--quick", "--readme"]) == 0
    out = capsys.readouterr().out.rstrip("\n") + "\n"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = "<!-- python -m benchmarks.gpu_perf --quick --readme -->\n"
    assert readme[readme.index(start) + len(start):readme.index("<!-- end -->")] == out
    assert out.startswith("Predicted") and "flash-maxsim (x" in out and "late-interaction-kernels (x" in out


def test_list_model_launches_match_the_counted_launches():
    """gpu_model_lists' per-call launches are the kernels and torch ops test_launch_counts counts."""
    try:
        counts = importlib.import_module("tests.test_launch_counts")
    except Exception as e:  # the simulator is not built here
        pytest.skip(f"tests/test_launch_counts.py does not import: {e}")
    for call, launches in gpu_model_lists.CALL_LAUNCHES.items():
        _, kernels_, torch_ops = counts.CASES[call]
        assert launches == kernels_ + len(torch_ops), call
    assert gpu_model_lists.step_launches("pld", False) == 3 and gpu_model_lists.step_launches("pl", False) == 3
    assert gpu_model_lists.step_launches("listmle", True) == 2 and gpu_model_lists.step_launches("kd", False) == 2


@pytest.mark.skipif(not os.environ.get("KDOPS_PEERS_SITE"), reason="set KDOPS_PEERS_SITE to the peers' install dir")
def test_a_peer_kernel_compiles_without_a_gpu():
    from benchmarks.gpu_perf import peers

    site = os.environ["KDOPS_PEERS_SITE"]
    r = peers.compile_sass(site, "late-interaction-kernels", 80, 32, peers.Config(32, 64, 4, 2), "bf16")
    ops = sass.parse(r["sass"])["_maxsim_fwd_kernel"].opcodes()
    assert any(o.startswith("HMMA.16816.F32.BF16") for o in ops) and any(o.startswith("LDSM") for o in ops)


@pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"), reason="no nvcc")
def test_fresh_kdops_profiles_equal_the_cache(profiles):
    """The cache holds what the compiler gives today (nvcc of maxsim_kernels.cu for sm_80/sm_90):
    the forward's tile and the backward's work units."""
    fresh = kdops_profile.fresh()
    for k, v in fresh.items():
        units = ("step", "group", "row", "scan", "batch") if k.startswith("kdops-bwd|") else ("tile_hi",)
        assert v["registers"] == profiles[k]["registers"], k
        for u in (u for u in units if u in v):
            assert v[u] == pytest.approx(profiles[k][u]), (k, u)


def test_model_splits_long_queries_where_the_launcher_does():
    """kernels.split_chunks is maxsim_groups.cuh's rule: on the simulated small device (2 SMs) a
    query of 130 tokens (3 chunks of 64 rows) against 1 to 8 docs runs split (the chunk sum makes
    2 launches) exactly where the model's copy of the rule says."""
    try:
        from kdops import _C_sim
    except ImportError as e:
        pytest.skip(f"kdops._C_sim is not built: {e}")
    Q = torch.ones(1, 130, 16, dtype=torch.float16)
    _C_sim.set_device("small")
    try:
        for docs in range(1, 9):
            before = _C_sim.launch_count()
            torch.ops.kdops_sim.maxsim(Q, torch.ones(docs, 1, 16, dtype=torch.float16), None, None, None, False, False)
            split = kernels.split_chunks(docs, 3, 2)[0] > 1
            assert _C_sim.launch_count() - before == 1 + split, docs
    finally:
        _C_sim.set_device("h100")
