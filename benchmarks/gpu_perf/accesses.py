"""kdops' MaxSim forward on the simulator with the access recorder (csrc/sim/access_record.h):
shared-memory wavefronts and 32-byte global sectors counted from the real addresses of every warp
access, against the ideal (the same bytes without bank conflicts / perfectly coalesced). The model
(kernels.kdops) multiplies its shared-memory and L2 terms by these ratios instead of assuming 1.

The run is small (SHAPE: 2 queries of 32 tokens against 2 docs of 128 tokens, d = 128: two blocks,
two 64-token doc tiles each) and the ratios are per warp access, so they hold per tile at any
shape with the same per-tile code path (d = 128, 16-byte aligned rows, no masks). The Triton peers
cannot run in the simulator (no CUDA C++ source): their ratios stay assumed 1.

Cached in profiles.json as 'accesses|kdops|<dtype>' with the sources' hash (kdops_profile.source_hash).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .kdops_profile import ROOT, source_hash

SHAPE = (2, 2, 32, 128, 128)  # Nq, Nd, Lq, Ld, d
DTYPES = ("fp16", "bf16", "tf32")  # tf32: the WMMA kernel with the similarity buffer (maxsim_tensor_core.cuh)


def _program():
    """access_maxsim.cu built in the simulator's record mode (tests/sim/simbuild.py), with c10's headers."""
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.sim.simbuild import Builder

    tdir = os.path.dirname(torch.__file__)
    return Builder().program("access_maxsim", "record", source=Path(__file__).with_name("access_maxsim.cu"),
                             compile_flags=(f"-isystem{tdir}/include",),
                             link_flags=(f"-L{tdir}/lib", "-lc10", f"-Wl,-rpath,{tdir}/lib"))


def summarize(rows: list[dict]) -> dict:
    """Per space: totals of requests, wavefronts or sectors, and ideal; and per (site, kind, bytes)."""
    out: dict = {"shared": {"requests": 0, "units": 0, "ideal": 0}, "global": {"requests": 0, "units": 0, "ideal": 0},
                 "sites": {}}
    for r in rows:
        units = r["wavefronts"] if r["space"] == "shared" else r["sectors"]
        for total in (out[r["space"]], out["sites"].setdefault(f"{r['site']} {r['space']} {r['kind']} {r['bytes']}B",
                                                               {"requests": 0, "units": 0, "ideal": 0})):
            total["requests"] += r["requests"]
            total["units"] += units
            total["ideal"] += r["ideal"]
    return out


def fresh() -> dict:
    """{'accesses|kdops|<dtype>': summary} from a recorded run of each dtype at SHAPE."""
    from tests.sim.simbuild import access_report

    program = _program()
    out = {}
    for dtype in DTYPES:
        proc = subprocess.run([str(program.path), dtype, *map(str, SHAPE)], capture_output=True, text=True, check=True)
        out[f"accesses|kdops|{dtype}"] = dict(summarize(access_report(proc.stdout, program.path)), shape=list(SHAPE),
                                              source=source_hash())
    return out


def ratios(profiles: dict, dtype: str) -> tuple[float, float]:
    """(shared wavefronts / ideal, global sectors / ideal) of kdops' forward in `dtype`."""
    a = profiles[f"accesses|kdops|{dtype}"]
    return a["shared"]["units"] / a["shared"]["ideal"], a["global"]["units"] / a["global"]["ideal"]


if __name__ == "__main__":  # python -m benchmarks.gpu_perf.accesses: prints the per-site counts
    import json

    print(json.dumps(fresh(), indent=1))
