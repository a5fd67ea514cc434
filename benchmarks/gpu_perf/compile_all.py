"""Compiles the peers' candidates and kdops' MaxSim kernels and writes their SASS summaries to
benchmarks/gpu_perf/profiles.json (the cache `python -m benchmarks.gpu_perf --quick` reads)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import peers, sass

PROFILES = Path(__file__).with_name("profiles.json")
# (peer, dtype the benchmark passes, the Lq values its kernel is compiled for at the modelled shapes:
# flash-maxsim chunks queries longer than 128 into 128-token launches; late-interaction-kernels
# compiles Lq as is).
PEER_LQ = {"flash-maxsim": ("fp16", (32, 128)), "late-interaction-kernels": ("bf16", (32, 128, 512, 1024))}


def kept(c: peers.Config) -> bool:
    """The d >= 512 fallbacks (16-wide tiles) are left out: at d = 128 a 16x16 tile does 1/8 of
    the MMA work per load of a 32x64 one, so the autotuner cannot pick them (an assumption that
    saves half the compile time)."""
    return c.block_q >= 32 and c.block_d >= 32


def peer_profiles(site: str, archs=(80, 90)) -> dict:
    out = {}
    for peer, (dtype, lqs) in PEER_LQ.items():
        for arch in archs:
            for lq in lqs:
                seen = set()
                for c in peers.candidates(site, peer, arch, lq):
                    if not kept(c) or c.key in seen:
                        continue
                    seen.add(c.key)
                    t = time.time()
                    r = peers.compile_sass(site, peer, arch, lq, c, "chunk" if lq == 128 else dtype)
                    func = list(sass.parse(r["sass"]).values())[0]
                    out[f"{peer}|sm_{arch}|{lq}|{c.key}"] = dict(
                        sass.summary(func), registers=list(r["registers"].values())[0], shared=r["shared"],
                        num_warps=c.num_warps, num_stages=c.num_stages, block_q=c.block_q, block_d=c.block_d,
                        opcodes=sorted({i.opcode for i in func.instrs if i.cls in ("tensor", "ldsm")}))
                    print(f"{peer} sm_{arch} Lq={lq} {c.key}: {time.time() - t:.1f} s", file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    site = sys.argv[1]
    data = json.loads(PROFILES.read_text()) if PROFILES.exists() else {}
    data.update(peer_profiles(site))
    PROFILES.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
