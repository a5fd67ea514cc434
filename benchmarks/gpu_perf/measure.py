"""Measured against predicted, the day a GPU is lent (benchmarks/gpu_check.sh): times the MaxSim
forward (and forward + backward) of kdops and of the peers at the model's side-by-side shapes
(report.SIDE_BY_SIDE, bf16, d = 128, one query against B shared docs, or in-batch), and writes the
measured times beside the model's predictions for that GPU.

    python -m benchmarks.gpu_perf.measure --out DIR [--device cuda|cpu] [--min-run-time S]

Peers: flash-maxsim (flash_maxsim_batched / _train, shared docs) and late-interaction-kernels
(maxsim), when importable (.whl/ on the GPU machine). On the CPU (a dry run of the script) the
shapes shrink to 2 docs of at most 64 tokens, the Triton peers are skipped, and the predictions
are the H100's: only the code path is checked, no number means anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import forward_backward, forward_only, time_pass

from . import kernels, report
from .compile_all import PROFILES
from .hw import GPUS, H100


def _peers() -> dict:
    """name -> (forward fn, forward + backward fn) of each importable peer."""
    out = {}
    try:
        import flash_maxsim as fm

        out["flash-maxsim"] = (lambda q, d: fm.flash_maxsim_batched(q, d, shared_docs=True),
                               lambda q, d: fm.flash_maxsim_batched_train(q, d, shared_docs=True))
    except ImportError as e:
        print(f"flash-maxsim not importable: {e}", file=sys.stderr)
    try:
        import late_interaction_kernels as lik

        out["late-interaction-kernels"] = (lik.maxsim, lik.maxsim)
    except ImportError as e:
        print(f"late-interaction-kernels not importable: {e}", file=sys.stderr)
    return out


def _gpu(device: torch.device):
    """The model's GPU for this device (its compute capability), else the H100's constants."""
    if device.type != "cuda":
        return H100
    major, minor = torch.cuda.get_device_capability(device)
    return GPUS.get(10 * major + minor, H100)


def write(out: Path, records: list[dict], device: str, model_gpu: str) -> None:
    """measured.json (the records) and measured_vs_predicted.md (a table) under out."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "measured.json").write_text(json.dumps(records, indent=1) + "\n")
    lines = [f"Measured on {device} (torch {torch.__version__}) against the model's prediction for "
             f"{model_gpu} (forward only: the model has no backward).", "",
             "| shape | impl | pass | measured us (p20-p80) | predicted us | measured / predicted |",
             "|---|---|---|---|---|---|"]
    for r in records:
        pred = r["predicted_us"]
        ratio = "-" if pred is None else f"{r['measured_us'] / pred:.2f}"
        lines.append(f"| {r['shape']} | {r['impl']} | {r['pass_']} | {r['measured_us']:.1f} ({r['p20_us']:.1f}-"
                     f"{r['p80_us']:.1f}) | {'-' if pred is None else f'{pred:.1f}'} | {ratio} |")
    (out / "measured_vs_predicted.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_perf.measure")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--min-run-time", type=float, default=0.1)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    gpu, profiles = _gpu(device), json.loads(PROFILES.read_text())
    peers = _peers() if device.type == "cuda" else {}
    impls = {"kdops": (kdops.maxsim, kdops.maxsim), **peers}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    records = []
    gen = torch.Generator().manual_seed(0)
    for s in report.SIDE_BY_SIDE:
        if device.type != "cuda":
            s = dataclasses.replace(s, b=2, lq=min(s.lq, 64), ld=min(s.ld, 64))
        q = F.normalize(torch.randn(s.nq, s.lq, kernels.D, generator=gen), dim=-1).to(device, torch.bfloat16)
        d = F.normalize(torch.randn(s.b, s.ld, kernels.D, generator=gen), dim=-1).to(device, torch.bfloat16)
        qg, dg = q.clone().requires_grad_(), d.clone().requires_grad_()
        predicted = {"kdops": kernels.kdops(profiles, "bf16", s, gpu, "hi").seconds * 1e6}
        for p in peers:
            try:
                predicted[p] = kernels.peer(profiles, p, s, gpu)[0].seconds * 1e6
            except KeyError:  # no compiled candidates at this shape: measured only
                pass
        for impl, (fwd, train) in impls.items():
            for pass_, fn in (("fwd", forward_only(fwd, [q, d])), ("fwd+bwd", forward_backward(train, [qg, dg]))):
                try:
                    median, p20, p80 = time_pass(fn, args.min_run_time)
                except Exception as e:  # a peer's failure is a result, not the end of the run
                    print(f"{impl} {pass_} {s.name}: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                records.append(dict(shape=s.name, nq=s.nq, b=s.b, lq=s.lq, ld=s.ld, impl=impl, pass_=pass_,
                                    measured_us=median * 1e3, p20_us=p20 * 1e3, p80_us=p80 * 1e3,
                                    predicted_us=predicted.get(impl) if pass_ == "fwd" else None,
                                    device=name, model_gpu=gpu.name))
                print(f"{s.name} {impl} {pass_}: {median * 1e3:.1f} us", file=sys.stderr, flush=True)
        write(Path(args.out), records, name, gpu.name)  # after each shape: a run cut short keeps what it measured
    print((Path(args.out) / "measured_vs_predicted.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
