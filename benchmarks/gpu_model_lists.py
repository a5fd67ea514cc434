"""A performance model of kdops' list-loss CUDA kernels (ListMLE, PLD, listwise KD, the PL loss
of a given ranking) on an H100, at the benchmark shapes of benchmarks/cases_plackett_luce.py
(float32, forward + backward through autograd, the student's gradient only): PREDICTED times,
not measurements; no GPU ran them.

    python -m benchmarks.gpu_model_lists      # prints the table (markdown)

What a training step runs (tests/test_launch_counts.py counts it on the simulator): the forward
computes the loss and the gradient at an upstream gradient of 1 in one kernel (the *_and_grads raw
ops; plackett_luce_loss: its forward, then its backward op), which also reduces the rows' losses
over the grid (its last block) and flags the index checks; PLD and PL assert their flag on the
device (one launch); and the backward multiplies the saved gradient by the upstream one (one
elementwise kernel). A row of up to 256 items is one warp's (csrc/cuda/plackett_luce_warp_kernels.cu:
the ranking sorted in registers, both scans, the gradients); a longer row one block's
(plackett_luce_kernels.cu: a bitonic sort in shared memory, then the tiled block scans with the
log-sum-exps in a global scratch row, in the same kernel); listwise KD one kernel, a warp or a
block per row (listwise_kd_kernels.cu).
The model, per kernel:
  time = max(HBM bytes / achievable HBM bandwidth, issued warp instructions / (4 schedulers x
         SMs x clock), the latency of one row's dependent chain x rows / rows in flight) + launches
with the instruction and latency counts per row estimated from the kernels' loops below; the
bound named is the largest of those terms, or "launches" where the launches' fixed cost is
larger than all of them (the small shapes: a step is then 2 or 3 launches, whatever the kernels do; see STEP_CALLS).
Every constant is an assumption, named; change one and the table follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.gpu_perf.hw import H100, Gpu

# Assumed instruction counts (warp instructions, per item a lane holds, or per step).
SORT_STEP = 8  # one compare-exchange of 64-bit (image, index) keys: compare, selects, index math
SHUFFLE_WORD = 1  # one 32-bit __shfl_*_sync
SCAN_ITEM = 14  # a LogSumExp merge (max, 2 exp, FMA) or an affine composition, with the guards
GRAD_ITEM = 24  # per item: 2-3 exp, the weight, the gradient, its scattered store
HBM_LATENCY_CYCLES = 600  # assumed latency of a global load that misses L2
BARRIER_CYCLES = 40  # assumed cost of a __syncthreads in a block of 256 threads
SHUFFLE_LATENCY_CYCLES = 30  # assumed dependent-shuffle latency (a scan step)
# The in-kernel reduction over the grid, once per launch after the rows: the last block's arrival
# atomic and its loads of the partials (two dependent L2 round trips, assumed at HBM latency), a
# block sum.
GRID_SUM_TAIL_CYCLES = 2 * HBM_LATENCY_CYCLES + 2 * BARRIER_CYCLES
# Registers a thread of the warp-per-row kernel (float, sm_90, by keys a lane), from
# benchmarks/results/static/kernels.md; they set the resident blocks of 256 threads an SM.
WARP_KERNEL_REGISTERS = {1: 32, 2: 40, 4: 60, 8: 97}
KD_REGISTERS = 40  # listwise_kd_rows_kernel, float, warp and block teams
SM_REGISTERS, MAX_BLOCKS_PER_SM = 65536, 8


@dataclass(frozen=True)
class ListShape:
    name: str
    op: str  # listmle, pld, kd, pl
    rows: int
    n: int

    @property
    def ranked(self) -> bool:  # the op sorts its own ranking
        return self.op in ("listmle", "pld")


SHAPES = [
    ListShape("PLD B=256 C=100", "pld", 256, 100),
    ListShape("PLD B=256 C=1000", "pld", 256, 1000),
    ListShape("PLD B=1024 C=1000", "pld", 1024, 1000),
    ListShape("ListMLE B=256 n=64", "listmle", 256, 64),
    ListShape("ListMLE B=4096 n=32", "listmle", 4096, 32),
    ListShape("listwise KD B=256 n=64", "kd", 256, 64),
    ListShape("listwise KD B=4096 n=32", "kd", 4096, 32),
    ListShape("PL given ranking B=256 n=64", "pl", 256, 64),
    ListShape("PL given ranking B=4096 n=32", "pl", 4096, 32),
]

WARP_ROW_ITEMS = 256  # plackett_luce_kernels.h: kMaxWarpRowItems
BLOCK_THREADS = 256


def _ceil(a: float, b: float) -> int:
    return int(math.ceil(a / b))


def hbm_bytes(s: ListShape) -> float:
    """Bytes that must cross HBM once in a fwd+bwd step: the scores and the keys / teacher / ranking
    read, the ranking written (int64, ListMLE / PLD), the gradient written, then read and written
    again by the backward's multiply (the PL loss of a given ranking: its backward op reads the
    scores and the ranking again instead)."""
    item = s.rows * s.n
    read = item * 4 * 2 if s.op != "pl" else item * (4 + 8)
    ranking = item * 8 if s.ranked else 0
    grad = item * 4
    backward = 2 * grad if s.op != "pl" else item * (4 + 8) + grad
    return read + ranking + grad + backward


def _items(s: ListShape) -> int:
    """Keys a lane of the warp-per-row kernel: 1, 2, 4 or 8."""
    return 1 << max(0, math.ceil(math.log2(_ceil(s.n, 32))))


def _resident_warps(s: ListShape) -> int:
    """Warps an SM holds, by the kernel's registers (blocks of 256 threads)."""
    registers = KD_REGISTERS if s.op == "kd" else WARP_KERNEL_REGISTERS[min(_items(s), 8)]
    blocks = min(MAX_BLOCKS_PER_SM, SM_REGISTERS // (registers * BLOCK_THREADS))
    return blocks * BLOCK_THREADS // 32


def _warp_row(s: ListShape) -> tuple[float, float]:
    """(warp instructions, latency cycles) of one row computed by one warp (n <= 256)."""
    items = _items(s)
    log = int(math.log2(32 * items))
    stages = log * (log + 1) // 2
    cross = sum(1 for k in range(1, log + 1) for j in range(k) if (1 << j) >= items)
    sort = (stages * items * SORT_STEP + cross * items * 2 * SHUFFLE_WORD) if s.ranked else 0
    scan = 2 * (items * SCAN_ITEM + 5 * (2 * SHUFFLE_WORD + SCAN_ITEM) + 2 * (SHUFFLE_WORD + SCAN_ITEM))
    if s.op == "kd":  # no sort, no scans: 3 warp reductions of the row and its gradient
        sort, scan = 0, 3 * (items * SCAN_ITEM + 5 * (2 * SHUFFLE_WORD + SCAN_ITEM))
    instr = sort + scan + items * GRAD_ITEM + 40
    # Dependent chain: keys (or the ranking) loaded, the sort's cross-lane shuffles, the gathered
    # scores loaded, the two scans' 5 shuffle steps each, the stores.
    latency = 2 * HBM_LATENCY_CYCLES + (cross if s.ranked else 0) * SHUFFLE_LATENCY_CYCLES
    latency += 12 * SHUFFLE_LATENCY_CYCLES + instr
    return instr, latency


def _block_row(s: ListShape) -> tuple[float, float]:
    """(warp instructions, latency cycles) of one row computed by one block of 256 threads."""
    warps = BLOCK_THREADS // 32
    tiles = _ceil(s.n, BLOCK_THREADS)
    if s.op == "kd":
        instr = warps * (3 * (tiles * SCAN_ITEM + 5 * (2 * SHUFFLE_WORD + SCAN_ITEM) + warps * SCAN_ITEM) + tiles * GRAD_ITEM)
        return instr, HBM_LATENCY_CYCLES + 3 * (5 * SHUFFLE_LATENCY_CYCLES + 2 * BARRIER_CYCLES) + instr / warps
    sorted_ = 1 << math.ceil(math.log2(s.n))
    log = int(math.log2(sorted_))
    stages = log * (log + 1) // 2
    per_thread = sorted_ // BLOCK_THREADS
    sort = warps * stages * per_thread * (SORT_STEP + 4) if s.ranked else 0  # + shared loads/stores
    sort_latency = (HBM_LATENCY_CYCLES + stages * (BARRIER_CYCLES + per_thread * SORT_STEP)) if s.ranked else 0
    # The gradient kernel: the suffix scan and the affine scan, tile by tile (a warp scan, the
    # warp totals in order, 2 barriers), lse through a global scratch row, then the gradients.
    tile = 5 * (2 * SHUFFLE_WORD + SCAN_ITEM) + warps * SCAN_ITEM + 2 * 4
    grad = warps * (2 * tiles * tile + tiles * GRAD_ITEM)
    grad_latency = 2 * HBM_LATENCY_CYCLES + 2 * tiles * (5 * SHUFFLE_LATENCY_CYCLES + 2 * BARRIER_CYCLES) + grad / warps
    return sort + grad, sort_latency + grad_latency


# Launches of a training step, from what tests/test_launch_counts.py counts on the simulator: each
# raw op call below is its kdops kernel plus one launch per torch op it runs (for PLD and PL the
# device-side assert of the index flag); autograd's backward then multiplies the saved gradient by
# the upstream one (one more launch), except PL, whose backward op takes the upstream gradient
# itself. tests/test_gpu_model.py checks CALL_LAUNCHES against that test's CASES.
STEP_CALLS = {  # (op, long rows) -> the raw op calls of a step (names of test_launch_counts.CASES)
    ("listmle", False): ["listmle_and_grads sum"], ("listmle", True): ["listmle_and_grads long rows sum"],
    ("pld", False): ["pld_loss_and_grads mean"], ("pld", True): ["pld_loss_and_grads long rows mean"],
    ("kd", False): ["listwise_kd_loss_and_grads mean"], ("kd", True): ["listwise_kd_loss_and_grads long rows mean"],
    ("pl", False): ["plackett_luce_loss mean", "plackett_luce_loss_backward mean"],
    ("pl", True): ["plackett_luce_loss long rows mean", "plackett_luce_loss_backward mean"],
}
CALL_LAUNCHES = {  # kernels + torch ops of each call, as test_launch_counts.CASES lists them
    "listmle_and_grads sum": 1, "listmle_and_grads long rows sum": 1,
    "pld_loss_and_grads mean": 2, "pld_loss_and_grads long rows mean": 2,
    "listwise_kd_loss_and_grads mean": 1, "listwise_kd_loss_and_grads long rows mean": 1,
    "plackett_luce_loss mean": 2, "plackett_luce_loss long rows mean": 2, "plackett_luce_loss_backward mean": 1,
}


def step_launches(op: str, long_rows: bool) -> int:
    return sum(CALL_LAUNCHES[c] for c in STEP_CALLS[(op, long_rows)]) + (0 if op == "pl" else 1)


def predict(s: ListShape, gpu: Gpu) -> tuple[float, str, int]:
    """(seconds, bound, launches) of a fwd+bwd step."""
    warp_rows = s.n <= WARP_ROW_ITEMS
    instr, latency = (_warp_row if warp_rows else _block_row)(s)
    in_flight = gpu.sms * _resident_warps(s)  # a row a warp
    if not warp_rows:
        in_flight //= BLOCK_THREADS // 32  # a row a block
    times = {
        "HBM": hbm_bytes(s) / (gpu.hbm_bytes_per_s * gpu.hbm_share),
        "issue": s.rows * instr / (gpu.schedulers * gpu.sms) / gpu.clock_hz,
        "latency": (_ceil(s.rows, in_flight) * latency + GRID_SUM_TAIL_CYCLES) / gpu.clock_hz,
    }
    launches = step_launches(s.op, not warp_rows)
    times["launches"] = launches * gpu.launch_s
    bound = max(times, key=times.get)
    work = max(t for k, t in times.items() if k != "launches")
    return work + times["launches"], bound, launches


def table(gpu: Gpu = H100) -> str:
    lines = [
        f"Predicted (not measured) float32 list-loss fwd+bwd times on an {gpu.name}; assumptions in "
        "benchmarks/gpu_model_lists.py.",
        "",
        "| shape | rows on | HBM MB | roofline us | predicted us (bound) | launches | x roofline |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SHAPES:
        seconds, bound, launches = predict(s, gpu)
        roof = hbm_bytes(s) / gpu.hbm_bytes_per_s
        lines.append(
            f"| {s.name} | {'a warp' if s.n <= WARP_ROW_ITEMS else 'a block'} | {hbm_bytes(s) / 1e6:.2f} "
            f"| {roof * 1e6:.2f} | {seconds * 1e6:.1f} ({bound}) | {launches} | {seconds / roof:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
