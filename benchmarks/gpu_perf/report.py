"""The two tables: calibration (predicted vs published, per peer and shape) and side by side
(kdops vs the peers at the same shapes, every figure PREDICTED and shown beside the calibration
error of the arch it is predicted for)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from . import accesses, backward, kernels
from .hw import GPUS

PUBLISHED = Path(__file__).with_name("published.json")
PEERS = ("flash-maxsim", "late-interaction-kernels")
# Side-by-side shapes: the peers' published forward shapes (one query against 1,000 docs), and
# benchmarks/cases_maxsim.py's forward shapes (in-batch 32 x 64 at Ld 180, ColPali-like 1 x 100).
SIDE_BY_SIDE = [
    kernels.Shape("textual 1x1000, Lq 32, Ld 300", 1, 1000, 32, 300),
    kernels.Shape("long-doc 1x1000, Lq 32, Ld 1024", 1, 1000, 32, 1024),
    kernels.Shape("medium 1x1000, Lq 128, Ld 1024", 1, 1000, 128, 1024),
    kernels.Shape("visual 1x1000, Lq 512, Ld 1024", 1, 1000, 512, 1024),
    kernels.Shape("ColPali 1x1000, Lq 1024, Ld 1024", 1, 1000, 1024, 1024),
    kernels.Shape("in-batch 32x64, Lq 32, Ld 180", 32, 64, 32, 180),
    kernels.Shape("ColPali-like 1x100, Lq 1024, Ld 1024", 1, 100, 1024, 1024),
]


def calibration(profiles: dict) -> list[dict]:
    rows = []
    for p in json.loads(PUBLISHED.read_text())["points"]:
        s = kernels.Shape(p["shape"], p["Nq"], p["B"], p["Lq"], p["Ld"])
        try:
            pred, cfg = kernels.peer(profiles, p["peer"], s, GPUS[p["arch"]])
        except KeyError:
            continue
        ms = pred.seconds * 1e3
        rows.append(dict(p, predicted_ms=ms, config=cfg, bound=pred.bound, log_ratio=math.log(ms / p["ms"])))
    return rows


def errors(rows: list[dict]) -> dict:
    """{(peer, arch) and ('all', arch): (median |ln(pred/pub)|, max, n)}."""
    out = {}
    for key in {(r["peer"], r["arch"]) for r in rows} | {("all", r["arch"]) for r in rows}:
        logs = [abs(r["log_ratio"]) for r in rows if r["arch"] == key[1] and key[0] in ("all", r["peer"])]
        out[key] = (statistics.median(logs), max(logs), len(logs))
    return out


def loo_scaled_errors(rows: list[dict], arch: int) -> tuple[float, float, float]:
    """(scale, median, max |ln|) when every prediction on `arch` is multiplied by that GPU's median
    published / predicted ratio (the scale), each point's ratio taken from the OTHER points only
    (leave-one-out), so the error is out of sample."""
    on = [r["log_ratio"] for r in rows if r["arch"] == arch]
    logs = [abs(x - statistics.median(on[:i] + on[i + 1:])) for i, x in enumerate(on)]
    return math.exp(-statistics.median(on)), statistics.median(logs), max(logs)


def _factor(x: float) -> str:
    return f"x{math.exp(x):.2f}"


def accesses_markdown(profiles: dict) -> list[str]:
    """kdops' forward as the simulator's access recorder counted it (accesses.py): per dtype, the
    shared wavefronts and global sectors against the conflict-free / coalesced ideal, and the
    source lines where they differ."""
    out = ["## Bank conflicts and sectors, counted by the simulator (kdops' forward)", "",
           "| dtype (kernel) | shared wavefronts / ideal | global sectors / ideal | lines off the ideal (counted / ideal) |",
           "|---|---|---|---|"]
    kernel = {"fp16": "maxsim_mma", "bf16": "maxsim_mma", "tf32": "WMMA, similarity buffer"}
    for dtype in accesses.DTYPES:
        a = profiles.get(f"accesses|kdops|{dtype}")
        if a is None:
            continue
        off = {}
        for site, t in a["sites"].items():
            if t["units"] != t["ideal"]:
                where, space = site.split(" ")[:2]
                key = f"{where.removeprefix('csrc/cuda/')} {space}"
                u, i = off.get(key, (0, 0))
                off[key] = (u + t["units"], i + t["ideal"])
        lines = ", ".join(f"{k} {u / i:.1f}x" for k, (u, i) in sorted(off.items())) or "none"
        sh, gl = a["shared"], a["global"]
        out.append(f"| {dtype} ({kernel[dtype]}) | {sh['units']} / {sh['ideal']} = {sh['units'] / sh['ideal']:.3f} | "
                   f"{gl['units']} / {gl['ideal']} = {gl['units'] / gl['ideal']:.3f} | {lines} |")
    nq, nd, lq, ld, d = next(iter(a for k, a in profiles.items() if k.startswith("accesses|")))["shape"]
    out += ["", f"Recorded at Nq = {nq}, Nd = {nd}, Lq = {lq}, Ld = {ld}, d = {d} (all pairs, no masks, no argmax); "
            "the ratios multiply kdops' shared-memory and L2 terms in the tables above (one ratio per kernel, so the chunk's epilogue weighs as at this shape's two doc tiles per chunk). The peers' are 1 (assumed: Triton "
            "kernels do not run in the simulator)."]
    return out


README_SHAPES = ("textual", "long-doc", "ColPali 1x1000", "in-batch", "ColPali-like")


def readme_table(profiles: dict) -> str:
    """The README's side-by-side table: H100, bf16 forward at the benchmark shapes, PREDICTED, with
    the calibration error beside it (`python -m benchmarks.gpu_perf --quick --readme`)."""
    g = GPUS[90]
    err = errors(calibration(profiles))
    med, mx, _ = err[("all", 90)]
    e = {p: err.get((p, 90), err[("all", 90)]) for p in PEERS}
    out = [f"Predicted MaxSim forward times on an {g.name}, in us (no GPU has run kdops): the model of "
           f"[docs/gpu-model.md](docs/gpu-model.md). Beside each name, the calibration error: how far the "
           f"model's predictions of the peers' published times are off (median / max; kdops': all the peers' "
           f"points).", "",
           f"| shape | kdops bf16 ({_factor(med)} / {_factor(mx)}) | "
           + " | ".join(f"{p} ({_factor(e[p][0])} / {_factor(e[p][1])})" for p in PEERS) + " |",
           "|---|---|---|---|"]
    for s in SIDE_BY_SIDE:
        if not s.name.startswith(README_SHAPES):
            continue
        cells = [f"{kernels.kdops(profiles, 'bf16', s, g, 'hi').seconds * 1e6:.0f}"]
        for p in PEERS:
            cells.append(f"{kernels.peer(profiles, p, s, g)[0].seconds * 1e6:.0f}")
        out.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def markdown(profiles: dict) -> str:
    rows = calibration(profiles)
    err = errors(rows)
    out = ["## Calibration: predicted vs the peers' published forward times", "",
           "| peer | GPU | shape (B docs, Lq, Ld) | config the model picks | bound | predicted ms | published ms | predicted / published |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['peer']} | {GPUS[r['arch']].name} | {r['shape']} ({r['B']}, {r['Lq']}, {r['Ld']}) | {r['config']} | "
                   f"{r['bound']} | {r['predicted_ms']:.3f} | {r['ms']:.3f} | {math.exp(r['log_ratio']):.2f} |")
    out += ["", "| peer | GPU | points | median error | max error | median predicted / published |",
            "|---|---|---|---|---|---|"]
    for (peer, arch), (med, mx, n) in sorted(err.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        signed = statistics.median(r["log_ratio"] for r in rows if r["arch"] == arch and peer in ("all", r["peer"]))
        out.append(f"| {peer} | {GPUS[arch].name} | {n} | {_factor(med)} | {_factor(mx)} | {math.exp(signed):.2f} |")
    out.append("")
    out.append("Error: exp(|ln(predicted / published)|), so x1.50 means off by 1.5 times either way; the last "
               "column keeps the sign (below 1: the model is optimistic).")
    out += ["", "Scaled by one factor per GPU (the median published / predicted of the other points: "
            "leave-one-out, so out of sample):", "",
            "| GPU | factor (all points) | median error | max error |", "|---|---|---|---|"]
    for arch in sorted({r["arch"] for r in rows}, reverse=True):
        scale, med, mx = loo_scaled_errors(rows, arch)
        out.append(f"| {GPUS[arch].name} | {scale:.2f} | {_factor(med)} | {_factor(mx)} |")
    out += ["", "The side-by-side tables below are NOT scaled: one factor per GPU multiplies every "
            "implementation alike, so the ratios between them, what the tables are for, do not change."]
    for arch in (90, 80):
        g = GPUS[arch]
        pooled = err.get(("all", arch))
        if pooled is None:
            continue
        e = {p: err.get((p, arch), pooled) for p in PEERS}
        out += ["", f"## Side by side on {g.name}: forward, no argmax, d = 128 (ALL PREDICTED)", "",
                f"Calibration error beside each figure: the peer's own median / max on this GPU (the pooled "
                f"error where a peer publishes no time on it); kdops' is the pooled error of the peers here "
                f"({_factor(pooled[0])} / {_factor(pooled[1])}), since no kdops measurement exists. kdops is "
                f"given as lo-hi (of the tile loop's straight-line code, the two-m16-tile fold only / all of it) "
                f"with the bound of hi; "
                f"the ratio uses hi. In brackets: the configuration the model picks, and its bound.", "",
                "| shape | kdops fp16 us | kdops bf16 us | flash-maxsim (fp16) us | late-interaction-kernels (bf16) us | kdops bf16 / best peer |",
                "|---|---|---|---|---|---|"]
        for s in SIDE_BY_SIDE:
            k = {dt: (kernels.kdops(profiles, dt, s, g, "lo"), kernels.kdops(profiles, dt, s, g, "hi")) for dt in ("fp16", "bf16")}
            peers = {}
            for p in PEERS:
                try:
                    pred, cfg = kernels.peer(profiles, p, s, g)
                    peers[p] = (pred.seconds * 1e6, cfg, pred.bound)
                except KeyError:
                    peers[p] = None
            cells = [f"{k[dt][0].seconds * 1e6:.0f}-{k[dt][1].seconds * 1e6:.0f} [{k[dt][1].bound}] "
                     f"({_factor(pooled[0])}/{_factor(pooled[1])})" for dt in ("fp16", "bf16")]
            for p in PEERS:
                cells.append("not compiled" if peers[p] is None else
                             f"{peers[p][0]:.0f} [{peers[p][1]}, {peers[p][2]}] ({_factor(e[p][0])}/{_factor(e[p][1])})")
            best = min(v[0] for v in peers.values() if v is not None)
            out.append(f"| {s.name} | " + " | ".join(cells) + f" | {k['bf16'][1].seconds * 1e6 / best:.2f} |")
    if any(k.startswith("accesses|") for k in profiles):
        out += [""] + accesses_markdown(profiles)
    out += [""] + backward.markdown(profiles, err)
    return "\n".join(out) + "\n"
