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


def kept(c: peers.Config, lq: int) -> bool:
    """Left out to bound compile time (assumptions, said in docs/gpu-model.md): the d >= 512
    fallbacks (16-wide tiles do 1/8 of a 32x64 tile's MMA work per load at d = 128), and for
    Lq >= 512 the 32-row tiles (late-interaction-kernels unrolls Lq / BLOCK_Q query tiles: one
    sm_80 compile at Lq 1024 took 141 s here; its forward.py names (128, 128, 8 warps) as the
    Hopper winner at ColPali's Lq = Ld = 1024)."""
    return c.block_q >= (64 if lq >= 512 else 32) and c.block_d >= 32


def peer_profiles(site: str, archs=(80, 90), only_lq: tuple[int, ...] | None = None, save=None) -> dict:
    """Every kept candidate of each peer, arch and Lq; `save(out)` after each compile (a run can
    take minutes on a small machine: what is done is kept)."""
    out = {}
    for peer, (dtype, lqs) in PEER_LQ.items():
        for arch in archs:
            for lq in lqs:
                if only_lq is not None and lq not in only_lq:
                    continue
                seen = set()
                for c in peers.candidates(site, peer, arch, lq):
                    if not kept(c, lq) or c.key in seen:
                        continue
                    seen.add(c.key)
                    t = time.time()
                    # flash-maxsim's Lq = 128 instance is compiled as the chunks of a longer query
                    # use it (with query lengths); a 128-token query alone runs it without them.
                    r = peers.compile_sass(site, peer, arch, lq, c, dtype, q_lengths=peer == "flash-maxsim" and lq == 128)
                    func = list(sass.parse(r["sass"]).values())[0]
                    out[f"{peer}|sm_{arch}|{lq}|{c.key}"] = dict(
                        sass.summary(func), registers=list(r["registers"].values())[0], shared=r["shared"],
                        num_warps=c.num_warps, num_stages=c.num_stages, block_q=c.block_q, block_d=c.block_d,
                        opcodes=sorted({i.opcode for i in func.instrs if i.cls in ("tensor", "ldsm")}))
                    print(f"{peer} sm_{arch} Lq={lq} {c.key}: {time.time() - t:.1f} s", file=sys.stderr, flush=True)
                    if save is not None:
                        save(out)
    return out


def merge_into_cache(new: dict) -> None:
    data = json.loads(PROFILES.read_text()) if PROFILES.exists() else {}
    data.update(new)
    PROFILES.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":  # python -m benchmarks.gpu_perf.compile_all PEERS_DIR [Lq ...]
    lqs = tuple(int(x) for x in sys.argv[2:]) or None
    peer_profiles(sys.argv[1], only_lq=lqs, save=merge_into_cache)
