"""Time of one kernel launch from its SASS summary (sass.totals per program) and the GPU's
constants (hw.py). Per SM, the work of the programs it gets is bounded by four rates, and the
slowest wins (the others are assumed to overlap it completely, which is optimistic where several
are close):
  issue   : every warp instruction takes an issue slot; a scheduler with w warps issues
            min(1, w / dependent_issue_cycles) per cycle (too few warps cannot fill the slots)
  tensor  : tensor-core multiply-adds / the arch's rate (mma.sync or wgmma, by opcode)
  shared  : bytes through LDS/STS/LDSM/LDGSTS / 128 B per cycle, times the wavefronts per
            conflict-free wavefront (kdops: counted by the simulator from each warp access's
            addresses, accesses.py; the Triton peers: 1, ASSUMED, they cannot run in the simulator)
  latency : each program's loop iterations wait for global data; with s pipeline stages a
            program has s - 1 tiles in flight, and r resident programs overlap
and the whole GPU by HBM (compulsory bytes) and L2 (every program's global requests, times the
32-byte sectors per ideal sector: counted for kdops, 1 assumed for the peers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .hw import Gpu


def plus(a: dict, b: dict, times: float = 1.0) -> dict:
    """a + times * b, key by key (instruction counts of work units)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v * times
    return out


@dataclass(frozen=True)
class Launch:
    programs: int  # blocks in the grid
    warps: int  # per block
    registers: int  # per thread
    shared: int  # bytes per block
    per_program: dict  # sass.totals summed over one program's executed instructions, per warp
    iterations: float  # loop iterations per program that wait on global loads
    stages: int  # tiles in flight per program (cp.async / Triton pipeline depth)
    hbm_bytes: float  # compulsory traffic of the launch
    hgmma: bool = False  # tensor work on wgmma (HGMMA) rather than mma.sync (HMMA)
    wavefronts_per_ideal: float = 1.0  # shared memory: bank conflicts (1: none)
    sectors_per_ideal: float = 1.0  # global: 32-byte sectors per sector of perfectly coalesced access


@dataclass(frozen=True)
class Prediction:
    seconds: float
    bound: str
    resident: int  # blocks per SM
    parts: dict  # seconds of each bound


def resident_blocks(l: Launch, g: Gpu) -> int:
    regs = math.ceil(l.registers / 8) * 8 * 32 * l.warps  # registers are allocated per warp in 256s
    by_regs = g.regs_per_sm // max(regs, 1)
    by_smem = g.smem_per_sm // (l.shared + g.block_smem_reserve)
    return max(0, min(g.max_blocks, g.max_warps // l.warps, by_regs, by_smem))


def predict(l: Launch, g: Gpu) -> Prediction:
    r = resident_blocks(l, g)
    if r == 0:
        raise ValueError("the block does not fit on an SM")
    per_sm = math.ceil(l.programs / g.sms)  # programs of the busiest SM
    live = min(r, per_sm)
    p = l.per_program
    warps_per_scheduler = live * l.warps / g.schedulers
    ipc = g.schedulers * min(1.0, warps_per_scheduler / g.dependent_issue_cycles)
    fma_rate = g.hgmma_fma_per_clk if l.hgmma else g.hmma_fma_per_clk
    cycles = {
        "issue": per_sm * l.warps * p.get("all", 0) / ipc,
        "tensor": per_sm * l.warps * p.get("fma", 0) / fma_rate,
        "shared": per_sm * l.warps * p.get("smem_bytes", 0) * l.wavefronts_per_ideal / g.smem_bytes_per_clk,
        "latency": per_sm / live * l.iterations * g.global_latency_cycles / max(1, l.stages - 1),
    }
    seconds = {k: v / g.clock_hz for k, v in cycles.items()}
    seconds["HBM"] = l.hbm_bytes / (g.hbm_bytes_per_s * g.hbm_share)
    seconds["L2"] = l.programs * l.warps * p.get("gmem_bytes", 0) * l.sectors_per_ideal / g.l2_bytes_per_s
    bound = max(seconds, key=seconds.get)
    return Prediction(seconds[bound] + g.launch_s, bound, r, seconds)
