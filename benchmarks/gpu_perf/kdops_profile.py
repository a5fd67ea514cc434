"""kdops' fp16/bf16 MaxSim forward (csrc/cuda/maxsim_mma.cuh) from its SASS: the work of one
64-token doc tile per warp, and of one query chunk around the tiles.

The kernel's loops are found in the SASS (sass.py) as backward-branch spans and told apart by what
they contain; their trip counts come from the source, at d = 128 with 16-byte aligned rows (the
cp.async path):
  MMA loop   (HMMA, innermost)   : 32 x 32 x 128 multiply-adds per warp per tile / its FMAs; of the
                                   loops nvcc makes (two m16 tiles or one, unrolled 16 or 4 steps
                                   deep), the two-tile one unrolled 4 deep, the one that runs at
                                   d = 128 (8 steps of 16 features) when all four warps hold real rows
  staging    (LDGSTS, innermost) : 64 rows x 16 copies / 128 threads = 8 copies per thread
  tile loop  (the smallest span around both)
  chunk loop (the smallest span around the tile loop)
The fold is straight-line code after the MMA loop. The tile loop's straight-line code holds the
one-m16-tile path too and both sides of its branches: `lo` counts the code from the two-tile MMA
loop's end to the tile loop's end (that path's fold), `hi` all of it; both without the
straight-line HMMA and LDSM (the leftover feature steps when d / 16 is not a multiple of the
unrolling: none at d = 128). The divergence fallbacks of
the shuffles (BRA.DIV targets at the function's end) branch back into the loops; their spans
overlap the real loops and are not used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import backward, sass
from .tools import cuobjdump_sass, registers

ROOT = Path(__file__).resolve().parents[2]
D, COLS, ROWS, THREADS = 128, 64, 64, 128
WARP_ROWS = WARP_COLS = 32
# maxsim_mma.cuh's smem_bytes(128) (64 query rows + 3 stages x 64 doc rows, stride 136 x 2 B), plus
# its static arrays (q_src 512 B, col_mask 24 B, part_value/part_index 1024 B, contrib 256 B: 1824
# as ptxas reports them, aligned; 1312 without the argmax, whose part_index is unused: the same
# blocks per SM).
SHARED_16BIT = (64 + 3 * 64) * 136 * 2 + 1824


def compile_cubin(arch: int, out: str) -> None:
    """nvcc -cubin of csrc/cuda/maxsim_kernels.cu with setup.py's flags and include paths."""
    import torch

    tdir = os.path.dirname(torch.__file__)
    nvidia = [str(p) for p in Path(tdir).parent.glob("nvidia/cu*/include")]
    cmd = [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"), "-cubin", f"-arch=sm_{arch}",
           "-O3", "-std=c++20", "--expt-relaxed-constexpr", "-DKDOPS_WITH_CUDA", "-DKDOPS_PTX_ARCH=90",
           f"-I{ROOT / 'csrc'}", f"-I{tdir}/include", f"-I{tdir}/include/torch/csrc/api/include",
           *[f"-I{p}" for p in nvidia], str(ROOT / "csrc/cuda/maxsim_kernels.cu"), "-o", out]
    subprocess.run(cmd, check=True)


def _scaled(body: dict, trips: float) -> dict:
    return {k: v * trips for k, v in body.items()}


def _add(*parts: dict) -> dict:
    out: dict = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def _without_leftover_steps(func: sass.Function, totals: dict, lo: int, hi: int, nested: tuple) -> dict:
    """totals of [lo, hi] less its straight-line HMMA and LDSM: the leftover feature steps of the
    unrolled MMA loops (d / 16 not a multiple of the unrolling), which do not run at d = 128."""
    for i in func.instrs:
        if lo <= i.addr <= hi and i.cls in ("tensor", "ldsm") and not any(l.contains(i.addr) for l in nested):
            totals = _add(totals, {"all": -1, i.cls: -1, "fma": -sass.tensor_fma(i.opcode)},
                          {"shared": -1, "smem_bytes": -sass.access_bytes(i.opcode)} if i.cls == "ldsm" else {})
    return totals


def tile_profile(func: sass.Function) -> dict:
    """{'tile_lo', 'tile_hi', 'chunk'}: per-warp totals of one doc tile and of one chunk's fixed work."""
    spans = func.all_loops()
    innermost = [l for l in spans if not any(sass.inside(o, l) for o in spans)]
    count = lambda l, op: sum(v for o, v in func.opcodes(l.start, l.end).items() if o.startswith(op))  # noqa: E731
    # Two m16 tiles: 8 HMMA per 4 LDSM (one: 4 per 3); the fewest HMMA is the 4-step unrolling.
    mma = min((l for l in innermost if count(l, "HMMA") and count(l, "HMMA") == 2 * count(l, "LDSM")),
              key=lambda l: count(l, "HMMA"))
    staging = [l for l in innermost if count(l, "LDGSTS")]
    tile_loop = min((l for l in spans if sass.inside(mma, l) and any(sass.inside(s, l) for s in staging)),
                    key=lambda l: l.end - l.start)
    chunk_loop = min((l for l in spans if sass.inside(tile_loop, l)), key=lambda l: l.end - l.start)
    copies = [l for l in staging if sass.inside(l, tile_loop)]
    body = sass.totals(func, mma.start, mma.end)
    loops = _add(_scaled(body, WARP_ROWS * WARP_COLS * D / body["fma"]),
                 *(_scaled(sass.totals(func, l.start, l.end), (COLS * D // 8 // THREADS) / count(l, "LDGSTS"))
                   for l in copies))
    nested = tuple(l for l in innermost if sass.inside(l, tile_loop))
    fold = _without_leftover_steps(func, sass.totals(func, mma.end + 1, tile_loop.end, nested), mma.end + 1,
                                   tile_loop.end, nested)
    straight = _without_leftover_steps(func, sass.totals(func, tile_loop.start, tile_loop.end, nested),
                                       tile_loop.start, tile_loop.end, nested)
    chunk = sass.totals(func, chunk_loop.start, chunk_loop.end, (tile_loop,))
    return {"tile_lo": _add(loops, fold), "tile_hi": _add(loops, straight), "chunk": chunk}


def profiles(cubins: dict[int, str]) -> dict:
    """{'kdops|sm_90|bf16|argmax0': {...}} for the 16-bit tensor-core kernels of each cubin, and the
    backward's bf16 kernels ('kdops-bwd|sm_90|dq', '...|dd': backward.py)."""
    out = {}
    for arch, path in cubins.items():
        funcs, regs = sass.parse(cuobjdump_sass(path)), registers(path)
        out.update(backward.profiles(funcs, regs, arch, source_hash()))
        for name, func in funcs.items():
            if "maxsim_mma_kernel" not in name:
                continue
            dtype = "fp16" if "Half" in name else "bf16"
            argmax = int("ELb1E" in name)
            out[f"kdops|sm_{arch}|{dtype}|argmax{argmax}"] = dict(
                tile_profile(func), registers=regs[name], shared=SHARED_16BIT, source=source_hash(),
                opcodes=sorted({i.opcode for i in func.instrs if i.cls in ("tensor", "ldsm")}))
    return out


def source_hash() -> str:
    """Of the sources the kdops profiles are compiled from: a cached profile with another hash is
    stale (tests/test_gpu_model.py fails on it)."""
    import hashlib

    # The serving ops' files (maxsim_quantized / maxsim_residual) are not compiled into
    # maxsim_kernels.cu, so they do not make the profiles stale.
    serving = ("maxsim_serving", "maxsim_quantized", "maxsim_residual")
    h = hashlib.sha256()
    for path in sorted((ROOT / "csrc" / "cuda").glob("maxsim*")):
        if not path.name.startswith(serving):
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def fresh() -> dict:
    """profiles() of freshly compiled sm_80 and sm_90 cubins."""
    with tempfile.TemporaryDirectory() as tmp:
        cubins = {}
        for arch in (80, 90):
            cubins[arch] = os.path.join(tmp, f"maxsim_sm{arch}.cubin")
            print(f"nvcc -cubin sm_{arch} csrc/cuda/maxsim_kernels.cu ...", file=sys.stderr, flush=True)
            compile_cubin(arch, cubins[arch])
        return profiles(cubins)
