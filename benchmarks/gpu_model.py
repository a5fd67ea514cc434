"""A performance model of kdops' MaxSim CUDA kernels on an H100, at the benchmark shapes of
benchmarks/cases_maxsim.py (bf16, and fp32 inputs on TF32 tensor cores): PREDICTED times, not
measurements; no GPU ran them.

    python -m benchmarks.gpu_model            # prints the table (markdown)

For each shape: the FLOPs of the similarities, the bytes that must cross HBM at least once, the
H100 roofline bound max(FLOPs / tensor peak, bytes / HBM bandwidth), and the time predicted for
kdops' kernels from their tile sizes (csrc/cuda/maxsim_tensor_core.cuh, maxsim_doc_grad.cuh,
maxsim_kernels.cu's dQ kernel). The model, per kernel:
  time = max(compute, L2 -> SM traffic / L2 bandwidth, HBM traffic / HBM bandwidth) + launches
  compute: the blocks an SM gets (round robin) x the cycles of their tiles, a tile costing
  max(its MMA cycles at the mma.sync rate, its instruction issue / 4 schedulers), i.e. the
  resident blocks are assumed to overlap one another's loads and folds perfectly, and the doc
  tiles are double-buffered by cp.async, so a block's own next tile loads during its MMAs too
  (shared memory at d = 128: 70 KB a block for bf16, 3 blocks an SM; 122 KB for fp32 on TF32,
  1 block, whose overlap then rests on its own double buffer).
Inference shapes (forward only) write no argmax: kdops.maxsim passes with_argmax=False, and the
kernels' no-argmax instances store scores only.
Every constant below is an assumption, named and stated; change one and the table follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Gpu:
    """H100 SXM5. Datasheet: 132 SMs, 989 TFLOP/s dense bf16 and 494.7 TFLOP/s dense TF32
    (wgmma), 3.35 TB/s HBM3.
    Assumed, not measured here: the clock under load, the share of the tensor peak that mma.sync
    (HMMA, what the WMMA API compiles to; wgmma needs sm_90a PTX) can reach, achievable HBM and
    L2 bandwidth, the L2 latency and the GPU time per launched kernel."""

    name: str = "H100 SXM5"
    sms: int = 132
    clock_hz: float = 1.755e9  # assumed sustained clock under tensor load (boost is 1.98 GHz)
    tensor_peak: float = 989e12  # dense bf16 FLOP/s, datasheet
    tf32_peak: float = 494.7e12  # dense TF32 FLOP/s, datasheet (half the bf16 rate)
    mma_sync_share: float = 0.6  # assumed: HMMA reaches ~60% of the wgmma peak on Hopper
    hbm_peak: float = 3.35e12  # bytes/s, datasheet
    hbm_share: float = 0.8  # assumed achievable share of the HBM peak
    l2_bandwidth: float = 5.5e12  # assumed L2 -> SM bytes/s
    l2_latency_cycles: int = 300  # assumed latency of a global load that hits L2
    schedulers: int = 4  # warp instructions issued per SM per cycle
    launch_s: float = 2.5e-6  # assumed GPU time per kernel of a queued launch (fill + drain)

    def peak(self, precision: str) -> float:
        return self.tf32_peak if precision == "tf32" else self.tensor_peak

    def mma_fma_per_cycle_per_sm(self, precision: str) -> float:
        return self.peak(precision) * self.mma_sync_share / 2 / self.sms / self.clock_hz


@dataclass(frozen=True)
class Shape:
    name: str
    nq: int
    lq: int
    doc_lengths: tuple[int, ...]  # the distinct docs' token counts
    per_query: bool  # each query reads its own K docs (else every query reads every doc)
    dim: int = 128
    train: bool = True  # forward + backward (else forward only, no argmax written)
    precision: str = "bf16"  # or "tf32": fp32 inputs on TF32 tensor cores (allow_tf32)

    @property
    def elem(self) -> int:  # bytes per input element
        return 4 if self.precision == "tf32" else 2

    @property
    def docs(self) -> int:
        return len(self.doc_lengths)

    @property
    def columns(self) -> int:  # scores per query
        return self.docs // self.nq if self.per_query else self.docs

    @property
    def pairs_tokens(self) -> int:  # sum over (query, doc) pairs of doc tokens
        total = sum(self.doc_lengths)
        return total if self.per_query else total * self.nq

    @property
    def flops(self) -> float:  # 2 * Lq * d per (query, doc token) pair
        return 2.0 * self.lq * self.dim * self.pairs_tokens


def _packed_lengths(total: int, docs: int, shortest: int, longest: int) -> tuple[int, ...]:
    """Skewed lengths like cases_maxsim's packed case (log-normal, clamped): a geometric ramp
    from shortest to longest rescaled to the recorded total (T = 8537 over 64 docs)."""
    ramp = [shortest * (longest / shortest) ** (k / (docs - 1)) for k in range(docs)]
    scale = total / sum(ramp)
    lengths = [max(1, round(x * scale)) for x in ramp]
    lengths[-1] += total - sum(lengths)
    return tuple(lengths)


SHAPES = [
    Shape("in-batch 32x64", 32, 32, (180,) * 64, False),
    Shape("distillation 32x32 (per query)", 32, 32, (180,) * (32 * 32), True),
    Shape("reranking 1x1000", 1, 32, (300,) * 1000, False, train=False),
    Shape("ColPali-like 1x100", 1, 1024, (1024,) * 100, False, train=False),
    Shape("packed skewed 32x64 (T=8537)", 32, 32, _packed_lengths(8537, 64, 20, 512), False),
    Shape("design target: in-batch 64x64, Ld=300", 64, 32, (300,) * 64, False),
]

# Tile sizes of csrc/cuda/maxsim_tensor_core.cuh and maxsim_doc_grad.cuh (k of the fragment: 16
# for bf16, 8 for TF32).
ROWS, COLS, FRAG, FWD_THREADS = 64, 64, 16, 128
FRAG_K = {"bf16": 16, "tf32": 8}
GRAD_ROWS_PER_WARP, GRAD_WARPS, GRAD_FEATURES = 8, 4, 128
DQ_THREADS = 128


def _ceil(a: float, b: float) -> int:
    return int(math.ceil(a / b))


@dataclass
class Prediction:
    seconds: float
    bound: str  # what limits it: "MMA", "issue", "L2", "HBM", "latency"
    launches: int


def forward(s: Shape, gpu: Gpu) -> Prediction:
    """The tensor-core forward: one block per (doc, group of G queries)."""
    seg = ROWS if s.lq >= ROWS else _ceil(s.lq, FRAG) * FRAG
    groups = 1 if s.per_query else _ceil(s.nq, ROWS // seg)
    queries_per_block = 1 if s.per_query else ROWS // seg
    chunks = _ceil(s.lq, seg)
    used_strips = _ceil(min(ROWS, queries_per_block * seg), FRAG)
    width = _ceil(s.dim, FRAG) * FRAG
    tiles = [chunks * _ceil(n, COLS) for n in s.doc_lengths] * groups  # per block
    blocks = len(tiles)
    # One 64-token tile: MMA cycles at the mma.sync rate; instructions: stage the doc tile
    # (16-byte cp.async copies, ~4 instructions each; TF32 then reloads its 4 floats, rounds them
    # with 4 cvt.rna.tf32 and stores them: ~6 more), WMMA loads/MMAs/stores per warp (per k step),
    # the fold (each of 128 threads scans 32 similarities at ~7 instructions), and 2 barriers.
    mma_cycles = used_strips * FRAG * COLS * width / gpu.mma_fma_per_cycle_per_sm(s.precision)
    per_load = 16 // s.elem
    stage = COLS * width / per_load / 32 * (4 + (6 if s.precision == "tf32" else 0))
    wmma = used_strips * (width // FRAG_K[s.precision]) * (1 + 4 + 4 * 2) + used_strips * 4 * 8
    fold = (FWD_THREADS // 32) * (COLS // 2) * 7
    issue_cycles = (stage + wmma + fold + 2 * 4) / gpu.schedulers
    tile_cycles = max(mma_cycles, issue_cycles)
    per_sm = sorted(tiles, reverse=True)
    sm_tiles = [sum(per_sm[i :: gpu.sms]) for i in range(min(gpu.sms, blocks))]
    compute = max(sm_tiles) * tile_cycles / gpu.clock_hz
    staged = sum(tiles) * COLS * s.dim * s.elem + blocks * chunks * ROWS * s.dim * s.elem
    hbm = _hbm_bytes(s, backward=False)
    times = {
        "MMA" if mma_cycles >= issue_cycles else "issue": compute,
        "L2": staged / gpu.l2_bandwidth,
        "HBM": hbm / (gpu.hbm_peak * gpu.hbm_share),
    }
    bound = max(times, key=times.get)
    return Prediction(times[bound] + gpu.launch_s, bound, 1)


def backward(s: Shape, gpu: Gpu) -> Prediction:
    """dQ (one block per query token row, K gathers of a doc row) and the dD gather (warps own 8
    doc rows and scan the doc's entries 32 at a time; each hit waits on a Q row load)."""
    dq_rows = s.nq * s.lq
    dq_bytes = dq_rows * s.columns * (s.dim * s.elem + 4)  # D row gathers + argmax, from L2
    dq_issue = dq_rows * s.columns * (DQ_THREADS // 32) * _ceil(s.dim, DQ_THREADS) * 8
    dq = max(dq_bytes / gpu.l2_bandwidth, dq_issue / (gpu.schedulers * gpu.sms) / gpu.clock_hz)
    readers = 1 if s.per_query else s.nq
    entries = readers * s.lq
    passes = _ceil(s.dim, GRAD_FEATURES)
    warp_cycles, warp_instr, warps = [], 0.0, 0
    for n in s.doc_lengths:
        for _ in range(_ceil(n, GRAD_ROWS_PER_WARP) * passes):
            hits = entries * min(GRAD_ROWS_PER_WARP, n) / n  # argmax spread evenly over the doc
            instr = _ceil(entries, 32) * 14 + hits * (12 + _ceil(min(s.dim, GRAD_FEATURES), 32) * 5)
            warp_instr += instr
            warp_cycles.append(max(instr, hits * gpu.l2_latency_cycles))
            warps += 1
    # 96 registers x 128 threads: 5 blocks (20 warps) per SM.
    resident = gpu.sms * 5 * GRAD_WARPS
    latency = sum(warp_cycles) / resident / gpu.clock_hz
    issue = warp_instr / (gpu.schedulers * gpu.sms) / gpu.clock_hz
    dd_bytes = sum(s.doc_lengths) * s.dim * s.elem + warps / passes * _ceil(entries, 32) * 32 * 4
    dd = max(latency, issue, dd_bytes / gpu.l2_bandwidth)
    hbm = _hbm_bytes(s, backward=True) / (gpu.hbm_peak * gpu.hbm_share)
    parts = {"dQ": dq, "dD latency" if latency >= issue else "dD issue": dd}
    bound = max(parts, key=parts.get) if dq + dd >= hbm else "HBM"
    # Launches: the weights (grad.to), dQ, dD.
    return Prediction(max(dq + dd, hbm) + 3 * gpu.launch_s, bound, 3)


def _hbm_bytes(s: Shape, backward: bool) -> float:
    """Bytes that must cross HBM once: Q and D read, scores (fp32) and argmax (int32, training)
    written; backward reads Q, argmax and the D rows the argmax names (at most all of D), and
    writes dQ and dD."""
    q = s.nq * s.lq * s.dim * s.elem
    d = sum(s.doc_lengths) * s.dim * s.elem
    argmax = s.nq * s.columns * s.lq * 4
    if backward:
        gathered = min(d, s.nq * s.columns * s.lq * s.dim * s.elem)
        return 2 * q + argmax + gathered + d
    return q + d + s.nq * s.columns * 4 + (argmax if s.train else 0)


def roofline(s: Shape, gpu: Gpu) -> float:
    """The H100 lower bound: all FLOPs at the dense tensor peak or all compulsory bytes at the
    HBM peak, whichever is longer (forward, plus backward for training shapes)."""
    flops = s.flops  # backward gathers rows; it does no GEMM-sized work
    bytes_ = _hbm_bytes(s, False) + (_hbm_bytes(s, True) if s.train else 0)
    return max(flops / gpu.peak(s.precision), bytes_ / gpu.hbm_peak)


def table(gpu: Gpu = Gpu(), precision: str = "bf16") -> str:
    what = "bf16" if precision == "bf16" else "fp32 (TF32 tensor cores, allow_tf32 set)"
    lines = [
        f"Predicted (not measured) {what} MaxSim times on an {gpu.name}, d = 128; assumptions in benchmarks/gpu_model.py.",
        "",
        "| shape | pass | GFLOP | HBM MB | roofline us | fwd us (bound) | bwd us (bound) | predicted total us | x roofline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in (replace(shape, precision=precision) for shape in SHAPES):
        f = forward(s, gpu)
        b = backward(s, gpu) if s.train else None
        total = f.seconds + (b.seconds if b else 0)
        hbm = _hbm_bytes(s, False) + (_hbm_bytes(s, True) if s.train else 0)
        bound = roofline(s, gpu)
        lines.append(
            f"| {s.name} | {'fwd+bwd' if s.train else 'fwd'} | {s.flops / 1e9:.2f} | {hbm / 1e6:.1f} "
            f"| {bound * 1e6:.1f} | {f.seconds * 1e6:.1f} ({f.bound}) "
            f"| {'-' if b is None else f'{b.seconds * 1e6:.1f} ({b.bound})'} | {total * 1e6:.1f} | {total / bound:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
    print()
    print(table(precision="tf32"))
