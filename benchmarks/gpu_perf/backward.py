"""kdops' MaxSim backward (bf16, d = 128) in the model: dQ (csrc/cuda/maxsim_query_grad.cuh) and dD
(csrc/cuda/maxsim_doc_grad.cuh) from their SASS, beside each one's memory minimum.

Work units found in the SASS (sass.py's loops without the shuffles' divergence fallbacks, told
apart by what they hold), trip counts from the source:
  dQ  column step : the innermost loop with the 16-byte D-row loads (LDG.E.128): kInFlight = 4
                    columns of the warp's 32 / G rows (G = 16 lanes per row at d = 128)
      column group: the loop around it, without it (argmax and weight loads, G columns)
      row         : the loops around that one, without it (once per warp row iteration)
  dD  scan step   : the smallest loop holding the ballot (VOTE): 32 entries of the doc
      hit batch   : the hit loop nested in it (the costliest, where nvcc makes several versions)
                    plus its inner feature loop for the feature steps its body does not cover:
                    kHitsInFlight = 4 hits, d / 32 features per lane
      group       : the loop around the scan, without it: zero fill, rank, stores (their loops
                    counted once)
The hit-count and combine kernels (when a doc has more than 256 entries) are counted as their
compulsory bytes at the HBM rate plus a launch each, not from SASS. Global sectors per request are
1 (assumed: each dQ row is a 16-lane group's 256 contiguous bytes, each dD hit a warp's 256
contiguous bytes of a Q row; the scan reads a warp's 32 consecutive int32 indices). One load wait
(hw.py's global latency) per dQ column step and group, per dD scan step and hit batch. No peer's
backward kernel is compiled here, so the backward has no calibration of its own: its figures carry
the forward's (the peers' published forward times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import model, sass
from .hw import Gpu

D, ELEM = 128, 2  # bf16
QG_WARPS, QG_IN_FLIGHT, QG_V = 4, 4, 8  # maxsim_query_grad.cuh: kWarps, kInFlight, V (16-byte loads)
DG_WARPS, DG_ROWS, DG_HITS, DG_HOT, DG_SLICES = 4, 8, 4, 256, 4  # maxsim_doc_grad.cuh constants
DG_SHARED = DG_WARPS * DG_ROWS * (512 // 4) * 4  # static sums: kRowsPerWarp x kFeatures fp32 per warp


def _ops(func: sass.Function, l: sass.Loop, prefix: str, exclude: tuple[sass.Loop, ...] = ()) -> int:
    """Instructions of `l` whose opcode starts with `prefix`, without those of `exclude`."""
    return sum(1 for i in func.instrs if l.contains(i.addr) and i.opcode.startswith(prefix)
               and not any(x.contains(i.addr) for x in exclude))


def _enclosing(func: sass.Function, inner: sass.Loop) -> list[sass.Loop]:
    """The loops around `inner`, innermost first."""
    return sorted((l for l in func.all_loops() if sass.inside(inner, l)), key=lambda l: l.end - l.start)


def query_grad_profile(func: sass.Function) -> dict:
    """{'step', 'group', 'row'}: per-warp totals of one column step, column group and row iteration."""
    step = next(l for l in func.all_loops() if _ops(func, l, "LDG.E.128") and not l.children)
    group, *outer = _enclosing(func, step)
    return {"step": sass.totals(func, step.start, step.end),
            "group": sass.totals(func, group.start, group.end, (step,)),
            "row": sass.totals(func, outer[-1].start, outer[-1].end, (group,))}


def doc_grad_profile(func: sass.Function) -> dict:
    """{'scan', 'batch', 'group'}: per-warp totals of one scan step, hit batch and row group."""
    scan = min((l for l in func.all_loops() if _ops(func, l, "VOTE")), key=lambda l: l.end - l.start)
    batches = []
    for l in (c for c in scan.children if _ops(func, c, "FFMA")):
        batch = sass.totals(func, l.start, l.end, tuple(l.children))
        # Feature steps (one FFMA per hit each) the body leaves to its inner loop, and that loop's trips.
        left = D // 32 - _ops(func, l, "FFMA", tuple(l.children)) // DG_HITS
        for inner in (c for c in l.children if _ops(func, c, "FFMA")):
            trips = math.ceil(max(0, left) / (_ops(func, inner, "FFMA") // DG_HITS))
            batch = model.plus(batch, sass.totals(func, inner.start, inner.end), trips)
        batches.append(batch)
    group = _enclosing(func, scan)[0]
    return {"scan": sass.totals(func, scan.start, scan.end, tuple(scan.children)),
            "batch": max(batches, key=lambda b: b["all"]),
            "group": sass.totals(func, group.start, group.end, (scan,))}


def profiles(funcs: dict[str, sass.Function], regs: dict[str, int], arch: int, source: str) -> dict:
    """{'kdops-bwd|sm_90|dq': {...}, 'kdops-bwd|sm_90|dd': {...}}: the bf16 instances of one cubin."""
    out = {}
    for name, func in funcs.items():
        if "BFloat16" not in name:
            continue
        if "maxsim_query_grad_kernel" in name and f"Li{QG_V}E" in name:
            prof = query_grad_profile(sass.without_fallbacks(func))
            out[f"kdops-bwd|sm_{arch}|dq"] = dict(prof, registers=regs[name], source=source)
        elif "maxsim_doc_grad_kernel" in name:
            prof = doc_grad_profile(sass.without_fallbacks(func))
            out[f"kdops-bwd|sm_{arch}|dd"] = dict(prof, registers=regs[name], source=source)
    return out


@dataclass(frozen=True)
class Case:
    name: str
    nq: int
    nd: int  # all pairs: every query against every doc (K = Nd)
    lq: int
    ld: int
    hot: bool  # every query token's argmax on one token of each doc; else spread evenly over the doc


CASES = [
    Case("in-batch 32x64, Lq 32, Ld 180, spread", 32, 64, 32, 180, False),
    Case("in-batch 32x64, Lq 32, Ld 300, spread", 32, 64, 32, 300, False),
    Case("ColPali-like 1x100, Lq 1024, Ld 1024, spread", 1, 100, 1024, 1024, False),
    Case("in-batch 32x64, Lq 32, Ld 300, all on one token", 32, 64, 32, 300, True),
    Case("ColPali-like 1x100, Lq 1024, Ld 1024, all on one token", 1, 100, 1024, 1024, True),
]


def _grid(items: int, g: Gpu) -> int:
    return max(1, min(items, g.sms * 32))  # maxsim_kernels.cu's blocks_for


def query_grad_bytes(c: Case) -> float:
    """What dQ must move: the saved indices, the weights, the D rows they name (once), dQ."""
    rows = c.nd if c.hot else c.nd * c.ld
    return c.nq * c.nd * c.lq * 4 + c.nq * c.nd * 4 + rows * D * ELEM + c.nq * c.lq * D * ELEM


def doc_grad_bytes(c: Case) -> float:
    """What dD must move: the saved indices, the weights, Q (every row is some doc's hit), all of dD."""
    return c.nq * c.nd * c.lq * 4 + c.nq * c.nd * 4 + c.nq * c.lq * D * ELEM + c.nd * c.ld * D * ELEM


def query_grad(profiles: dict, c: Case, g: Gpu) -> model.Prediction:
    p = profiles[f"kdops-bwd|sm_{g.arch}|dq"]
    lanes = 16  # lanes_per_row(128, 8): 16 loads of 8 bf16
    rows_per_warp = 32 // lanes
    programs = _grid(math.ceil(c.nq * c.lq / (QG_WARPS * rows_per_warp)), g)
    iterations = math.ceil(c.nq * c.lq / (programs * QG_WARPS * rows_per_warp))  # row iterations per warp
    groups = math.ceil(c.nd / lanes)
    steps = sum(math.ceil(min(lanes, c.nd - k0) / QG_IN_FLIGHT) for k0 in range(0, c.nd, lanes))
    per_row = model.plus(model.plus(p["row"], p["group"], groups), p["step"], steps)
    launch = model.Launch(programs=programs, warps=QG_WARPS, registers=p["registers"], shared=0,
                          per_program={k: v * iterations for k, v in per_row.items()},
                          iterations=iterations * (groups + steps), stages=2, hbm_bytes=query_grad_bytes(c))
    return model.predict(launch, g)


def doc_grad(profiles: dict, c: Case, g: Gpu) -> tuple[model.Prediction, float]:
    """(the dD kernel's prediction, the whole dD in seconds: + the count and combine kernels)."""
    p = profiles[f"kdops-bwd|sm_{g.arch}|dd"]
    entries = c.nq * c.lq  # per doc (all pairs)
    slices = min(DG_SLICES, max(1, math.ceil(entries / DG_HOT)))
    groups = math.ceil(c.ld / DG_ROWS)  # per doc
    tiles = math.ceil(c.ld / (DG_WARPS * DG_ROWS))
    scan = math.ceil(entries / 32)
    # Load waits in a row: a block's is its slowest warp's (one per scan step and per hit batch);
    # blocks of parts s > 0 have none unless their tile holds a hot group.
    if c.hot:  # one hot group per doc split into `slices` parts; the others scan and find nothing
        hot_scan, hot_batches = math.ceil(entries / slices / 32), math.ceil(entries / slices / DG_HITS)
        work = model.plus(model.plus(p["group"], p["scan"], hot_scan), p["batch"], hot_batches)
        cold = model.plus(p["group"], p["scan"], scan)
        per_doc = model.plus({k: v * slices for k, v in work.items()}, cold, groups - 1)
        longest = max(scan, hot_scan + hot_batches)
        waits = (tiles - 1) * scan + longest + (slices - 1) * (hot_scan + hot_batches)
    else:
        batches = math.ceil(entries * DG_ROWS / c.ld / DG_HITS)
        per_group = model.plus(model.plus(p["group"], p["scan"], scan), p["batch"], batches)
        per_doc = {k: v * groups for k, v in per_group.items()}
        longest = scan + batches
        waits = tiles * longest
    items = c.nd * tiles * slices
    programs = _grid(items, g)
    per_warp = {k: v * c.nd / (programs * DG_WARPS) for k, v in per_doc.items()}
    launch = model.Launch(programs=programs, warps=DG_WARPS, registers=p["registers"], shared=DG_SHARED,
                          per_program=per_warp, iterations=c.nd * waits / programs, stages=2,
                          hbm_bytes=doc_grad_bytes(c))
    pred = model.predict(launch, g)
    # No program ends before its slowest block's waits: a floor the per-SM averages can miss.
    critical = longest * g.global_latency_cycles / g.clock_hz + g.launch_s
    if critical > pred.seconds:
        parts = dict(pred.parts, **{"slowest block": critical})
        pred = model.Prediction(critical, "slowest block", pred.resident, parts)
    seconds = pred.seconds
    if slices > 1:  # counts [T] int32 (zeroed, atomics on argmax), combine: slices x hot rows fp32 -> dD
        hot_rows = c.nd * DG_ROWS if c.hot else 0
        extra = c.nq * c.nd * c.lq * 4 + 2 * c.nd * c.ld * 4 + hot_rows * D * (slices * 4 + ELEM)
        seconds += extra / (g.hbm_bytes_per_s * g.hbm_share) + 2 * g.launch_s
    return pred, seconds


def markdown(profiles: dict, errors: dict) -> list[str]:
    """The backward table per GPU: each kernel's prediction beside its memory minimum (the bytes it
    must move at the datasheet's HBM bandwidth). errors: report.errors of the calibration."""
    from .hw import GPUS

    out = ["## MaxSim backward: dQ and dD against their memory minimum, bf16, d = 128 (ALL PREDICTED)", "",
           "All pairs (every query against every doc); the argmax spread evenly over each doc's tokens, or "
           "every query token's on one token of each doc (dD's hot-row split: the count and combine kernels "
           "run, one row group per doc is split in 4 parts). dD's time includes the count and combine "
           "kernels when a doc has more than 256 (query, token) entries. Minimum: the bytes the kernel must "
           "move over the datasheet's HBM bandwidth. No peer backward is modelled (late-interaction-kernels "
           "publishes backward times, not at these shapes, and its backward kernels are not compiled here), "
           "so the error beside each GPU is the forward's calibration error, pooled over the peers (median / max)."]
    for arch in (90, 80):
        g, key = GPUS[arch], f"kdops-bwd|sm_{arch}|dq"
        if key not in profiles or ("all", arch) not in errors:
            continue
        med, mx, _ = errors[("all", arch)]
        out += ["", f"{g.name} (calibration error x{math.exp(med):.2f} / x{math.exp(mx):.2f}; registers dQ "
                f"{profiles[key]['registers']}, dD {profiles[f'kdops-bwd|sm_{arch}|dd']['registers']}):", "",
                "| case | dQ us [bound] | dQ minimum us | dQ / minimum | dD us [bound of its main kernel] | "
                "dD minimum us | dD / minimum |", "|---|---|---|---|---|---|---|"]
        for c in CASES:
            q = query_grad(profiles, c, g)
            d, d_total = doc_grad(profiles, c, g)
            q_min, d_min = query_grad_bytes(c) / g.hbm_bytes_per_s, doc_grad_bytes(c) / g.hbm_bytes_per_s
            out.append(f"| {c.name} | {q.seconds * 1e6:.1f} [{q.bound}] | {q_min * 1e6:.2f} | "
                       f"{q.seconds / q_min:.1f} | "
                       f"{d_total * 1e6:.1f} [{d.bound}] | {d_min * 1e6:.2f} | {d_total / d_min:.1f} |")
    return out
