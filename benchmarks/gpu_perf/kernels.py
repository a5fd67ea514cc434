"""Each implementation's launches for a MaxSim forward of one shape (no argmax, no masks, d = 128):
Nq queries [Lq, d] against B shared docs [Ld, d], built from the SASS summaries in profiles.json,
the way each library's Python code launches them. Returns the predicted time and what bounds it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import accesses, model
from .hw import Gpu

D = 128


@dataclass(frozen=True)
class Shape:
    name: str
    nq: int
    b: int
    lq: int
    ld: int


def _hbm(s: Shape, elem: int) -> float:
    return (s.b * s.ld + s.nq * s.lq) * D * elem + s.nq * s.b * 4


def triton_launch(prof: dict, programs: int, ld: int, hbm: float) -> model.Launch:
    trips = math.ceil(ld / prof["block_d"])
    return model.Launch(
        programs=programs, warps=prof["num_warps"], registers=prof["registers"], shared=prof["shared"],
        per_program=model.plus(prof["straight"], prof["loop"], trips), iterations=trips * prof["loops"],
        stages=prof["num_stages"], hbm_bytes=hbm, hgmma=prof["loop"].get("hgmma", 0) > 0)


def peer(profiles: dict, name: str, s: Shape, g: Gpu) -> tuple[model.Prediction, str]:
    """The autotuner's pick as the model sees it: the candidate predicted fastest."""
    if name == "flash-maxsim":
        # flash_maxsim / flash_maxsim_batched: Lq <= 128 in one launch; longer queries in 128-token
        # chunks as Nq * chunks "queries" (one launch), plus torch.full (chunk lengths) and the
        # chunk sum: two more launches.
        chunks = 1 if s.lq <= 128 else math.ceil(s.lq / 128)
        lq, programs, extra = (s.lq, s.nq * s.b, 0) if chunks == 1 else (128, s.nq * chunks * s.b, 2)
    else:
        # late_interaction_kernels.maxsim: one program per (query, doc), Lq compiled in.
        lq, programs, extra = s.lq, s.nq * s.b, 0
    best = None
    prefix = f"{name}|sm_{g.arch}|{lq}|"
    for key, prof in profiles.items():
        if not key.startswith(prefix):
            continue
        try:
            p = model.predict(triton_launch(prof, programs, s.ld, _hbm(s, 2)), g)
        except ValueError:
            continue
        if best is None or p.seconds < best[0].seconds:
            best = (p, key.removeprefix(prefix))
    if best is None:
        raise KeyError(f"no compiled candidates for {prefix} in profiles.json")
    p, cfg = best
    return model.Prediction(p.seconds + extra * g.launch_s, p.bound, p.resident, p.parts), cfg


def split_chunks(items: int, chunks: int, sms: int, resident: int = 4) -> tuple[int, int]:
    """(splits, chunks per split): maxsim_groups.cuh's split_chunks, the same rule (resident: the
    kernel's launch bounds' 4 blocks per SM)."""
    best = None
    for per in range(chunks, 0, -1):
        splits = math.ceil(chunks / per)
        n = math.ceil(items * splits / sms)
        time = n * per / min(resident, max(n, 1))
        if best is None or time < best[0]:
            best = (time, splits, per)
    return (1, chunks) if best is None else best[1:]


def kdops(profiles: dict, dtype: str, s: Shape, g: Gpu, bound: str = "hi") -> model.Prediction:
    """maxsim_mma_kernel: one block per (doc, group of G queries), 64 query rows of `seg` rows per
    query, 64-token doc tiles, 3 stages (maxsim_mma.cuh, maxsim_groups.cuh); a long query's row
    chunks split over blocks when split_chunks says so, plus the chunk sum's launch. Every warp is
    counted as busy: with one query of 32 tokens per block (reranking) two of the four skip their
    MMAs, so there the issue work is overstated. Bank conflicts and sectors per request: the ratios
    the simulator counted (accesses.py)."""
    prof = profiles[f"kdops|sm_{g.arch}|{dtype}|argmax0"]
    seg = 64 if s.lq >= 64 else math.ceil(s.lq / 16) * 16
    groups = math.ceil(s.nq / (64 // seg))
    chunks = math.ceil(s.lq / seg)
    splits, per = split_chunks(s.b * groups, chunks, g.sms)
    tiles = math.ceil(s.ld / 64)
    per_program = {k: v * per for k, v in model.plus(prof["chunk"], prof[f"tile_{bound}"], tiles).items()}
    wavefronts, sectors = accesses.ratios(profiles, dtype)
    launch = model.Launch(programs=s.b * groups * splits, warps=4, registers=prof["registers"], shared=prof["shared"],
                          per_program=per_program, iterations=per * tiles, stages=3, hbm_bytes=_hbm(s, 2),
                          wavefronts_per_ideal=wavefronts, sectors_per_ideal=sectors)
    p = model.predict(launch, g)
    # The chunk sum: one more launch, reading the chunks x Nq x B partial sums (negligible bytes).
    return p if splits == 1 else model.Prediction(p.seconds + g.launch_s, p.bound, p.resident, p.parts)
