"""kdops' tensor-core MaxSim forward (csrc/cuda/maxsim_tensor_core.cuh) from its SASS: the work of
one 64-token doc tile per warp, and of one query chunk around the tiles.

The kernel's loops are found in the SASS (sass.py) and told apart by what they contain; their trip
counts come from the source, at d = 128 with 16-byte aligned rows (the cp.async path):
  MMA loop    (has HMMA)               : 16 x 64 x 128 multiply-adds per warp per tile / its FMAs
  staging     (has LDGSTS)             : 64 rows x 16 copies / 128 threads = 8 copies per thread
  fold        (FMNMX, LDS, no global)  : 32 columns per thread (64 columns, 2 threads a row)
The fold with a global load (the d_mask byte), and the plain-load staging loop, do not run at the
modelled shapes (no doc mask, aligned rows). The tile loop's own straight-line code holds both sides
of its branches: counting all of it is an upper bound (`hi`), counting none a lower bound (`lo`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import sass
from .tools import cuobjdump_sass, registers

ROOT = Path(__file__).resolve().parents[2]
D, COLS, ROWS, THREADS = 128, 64, 64, 128
# maxsim_tensor_core.cuh's smem_bytes(128, 2) (kAlign + 192 staged rows x stride 136 x 2 B +
# 64 x kSimStride 68 x 4 B), plus the static `contrib` array.
SHARED_16BIT = 128 + 192 * 136 * 2 + 64 * 68 * 4 + 256


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


def tile_profile(func: sass.Function) -> dict:
    """{'tile_lo', 'tile_hi', 'chunk'}: per-warp totals of one doc tile and of one chunk's fixed work."""
    tile_loop = next(l for l in func.all_loops() if any(c.children == [] and func.body(c).get("tensor") for c in l.children))
    chunk_loop = next(l for l in func.all_loops() if tile_loop in l.children)
    parts = []
    for c in tile_loop.children:
        body = sass.totals(func, c.start, c.end)
        ops = func.opcodes(c.start, c.end)
        if body.get("tensor"):
            parts.append(_scaled(body, 16 * COLS * D / body["fma"]))
        elif any(o.startswith("LDGSTS") for o in ops):
            parts.append(_scaled(body, (COLS * D // 8 // THREADS) / sum(v for o, v in ops.items() if o.startswith("LDGSTS"))))
        elif any(o.startswith("FMNMX") for o in ops) and not body.get("global"):
            parts.append(_scaled(body, (COLS // 2) / sum(v for o, v in ops.items() if o.startswith("LDS"))))
    loops = _add(*parts)
    straight = sass.totals(func, tile_loop.start, tile_loop.end, tuple(tile_loop.children))
    chunk = sass.totals(func, chunk_loop.start, chunk_loop.end, (tile_loop,))
    return {"tile_lo": loops, "tile_hi": _add(loops, straight), "chunk": chunk}


def profiles(cubins: dict[int, str]) -> dict:
    """{'kdops|sm_90|bf16|argmax0': {...}} for the 16-bit tensor-core kernels of each cubin."""
    out = {}
    for arch, path in cubins.items():
        funcs, regs = sass.parse(cuobjdump_sass(path)), registers(path)
        for name, func in funcs.items():
            if "maxsim_tensor_core_kernel" not in name or not ("Half" in name or "BFloat16" in name):
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

    h = hashlib.sha256()
    for path in sorted((ROOT / "csrc" / "cuda").glob("maxsim*")):
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
