"""Run every op's benchmark and print one table per op: median time of each implementation,
its ratio to kdops, and peak extra memory. Records JSON (flat records, see DESIGN.md), a
markdown table and a plot under benchmarks/results/<device>/.

    python -m benchmarks.run [--device cpu|cuda] [--ops margin_mse,...] [--min-run-time S]
                             [--quick] [--filter OP] [--case CASE] [--merge] [--threads N]
                             [--clock wall|cpu]

--quick: a fast look (one shape per op and case, 0.1 s per implementation, no torch.compile,
whose compilation would dominate); --filter OP: only the ops whose name contains OP; --case CASE:
only the cases whose name contains CASE. Each prints the table without recording it, unless
--out or --merge is given. --merge: the rows measured replace the same rows (op, case, shape,
dtype, pass, implementation) of the recorded table, which keeps its other rows (each row
carries its own date). The default records the full table under benchmarks/results/<device>/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
from pathlib import Path

import torch

import kdops
from benchmarks.harness import FLOOR, Case, peak_bytes, time_pass, time_passes_interleaved

FAMILIES = ["margin_mse", "plackett_luce", "maxsim", "maxsim_serving"]
RESULTS = Path(__file__).parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()} (torch threads {torch.get_num_threads()})"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace("nvidia ", "").replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


def _runs(impl) -> bool:
    """Whether impl runs (one call); a peer that cannot run this case is reported, not fatal."""
    try:
        impl.fn()
        return True
    except Exception as err:
        print(f"  {impl.name}: failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
        return False


def run_case(case: Case, device: torch.device, min_run_time: float, stamp: dict, clock: str = "wall") -> list[dict]:
    """Times every implementation of the case (with clock='cpu', in turns: time_passes_interleaved;
    beside whatever case.beside runs), then measures each one's peak memory."""
    impls = [impl for impl in case.impls if _runs(impl)]
    with case.beside() if case.beside is not None else contextlib.nullcontext():
        if clock == "cpu":
            timings = time_passes_interleaved([impl.fn for impl in impls], min_run_time)
        else:
            timings = [time_pass(impl.fn, min_run_time) for impl in impls]
    records = []
    for impl, (median, p20, p80) in zip(impls, timings):
        peak = peak_bytes(impl.fn, device)
        records.append(
            {
                "op": case.op,
                "case": case.case,
                "shape": case.shape,
                "dtype": str(case.dtype).removeprefix("torch."),
                "pass": case.pass_,
                "impl": impl.name,
                "median_ms": median,
                "p20_ms": p20,
                "p80_ms": p80,
                "peak_bytes": peak,
                "gflops": case.flops / median / 1e6 if case.flops else None,
                **stamp,
            }
        )
    return records


def merged(recorded: list[dict], measured: list[dict]) -> list[dict]:
    """The recorded rows, each replaced by the measured row of the same op, case, shape, dtype,
    pass and implementation where there is one (in place, so the table keeps its order); measured
    rows new to the table come last."""
    def key(r: dict) -> tuple:
        return r["op"], r["case"], r["shape"], r["dtype"], r["pass"], r["impl"]

    fresh = {key(r): r for r in measured}
    out = [fresh.pop(key(r), r) for r in recorded]
    return out + [r for r in measured if key(r) in fresh]


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def best_other(rows: list[dict]) -> dict | None:
    """The fastest implementation of one case other than kdops (reference, compile or a peer;
    not the floor, which computes no loss)."""
    others = [r for r in rows if r["impl"] not in ("kdops", FLOOR)]
    return min(others, key=lambda r: r["median_ms"]) if others else None


def markdown(records: list[dict], header: str) -> str:
    """One table per op; each row an implementation at a case, with time and memory ratios to
    kdops at the same case (>1 means kdops is faster / leaner). The kdops row also gives its
    ratio to the fastest other implementation of the case (>1: kdops ahead of all of them)."""
    lines = [header, ""]
    by_op: dict[str, list[dict]] = {}
    for r in records:
        by_op.setdefault(r["op"], []).append(r)
    for op, rows in by_op.items():
        lines += [f"### {op}", "", "| case | shape | pass | impl | median ms (p20-p80) | vs kdops | peak MiB | mem vs kdops | kdops vs best other |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ours = {(r["case"], r["shape"]): r for r in rows if r["impl"] == "kdops"}
        for r in rows:
            k = ours.get((r["case"], r["shape"]))
            speed = f"{r['median_ms'] / k['median_ms']:.2f}x" if k else "-"
            mem = f"{r['peak_bytes'] / k['peak_bytes']:.1f}x" if k and k["peak_bytes"] > 0 else "-"
            gf = f", {r['gflops']:.0f} GFLOP/s" if r.get("gflops") else ""
            lead = "-"
            if r["impl"] == "kdops":
                best = best_other([x for x in rows if (x["case"], x["shape"]) == (r["case"], r["shape"])])
                if best is not None:
                    lead = f"{best['median_ms'] / r['median_ms']:.2f}x ({best['impl']})"
            lines.append(
                f"| {r['case']} | {r['shape']} | {r['pass']} | {r['impl']} | "
                f"{r['median_ms']:.3f} ({r['p20_ms']:.3f}-{r['p80_ms']:.3f}){gf} | {speed} | "
                f"{_mib(r['peak_bytes'])} | {mem} | {lead} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(records: list[dict], path: Path, title: str) -> None:
    """Bar chart: each implementation's time relative to kdops, per case (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = []
    for r in records:
        key = (r["op"], r["case"], r["shape"])
        if key not in keys:
            keys.append(key)
    impls = sorted({r["impl"] for r in records}, key=lambda n: (n != "kdops", n))
    kd = {(r["op"], r["case"], r["shape"]): r["median_ms"] for r in records if r["impl"] == "kdops"}
    fig, ax = plt.subplots(figsize=(max(8, len(keys) * 0.9), 5))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for j, key in enumerate(keys):
            match = [r for r in records if (r["op"], r["case"], r["shape"]) == key and r["impl"] == impl]
            if match and key in kd:
                xs.append(j + i * width)
                ys.append(match[0]["median_ms"] / kd[key])
        ax.bar(xs, ys, width, label=impl)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{op}\n{case}\n{shape}" for op, case, shape in keys], fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("time / kdops time (higher: kdops faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default=",".join(FAMILIES), help="comma-separated op families")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timing per implementation")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/<device>)")
    parser.add_argument("--quick", action="store_true",
                        help="one shape per op and case, 0.1 s per implementation, no torch.compile; not recorded")
    parser.add_argument("--filter", default=None, metavar="OP", help="only the ops whose name contains OP; not recorded")
    parser.add_argument("--case", default=None, metavar="CASE", help="only the cases whose name contains CASE; not recorded")
    parser.add_argument("--merge", action="store_true",
                        help="replace the measured rows in the recorded table (--out or results/<device>), keep the others")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's). 1 keeps the comparison fair on a machine "
                             "shared with other jobs, where a descheduled thread stalls every parallel region")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: time the process's CPU time, a case's implementations in turns (with "
                             "--threads 1, robust to a machine shared with other jobs or changing speed); "
                             "wall (default): elapsed time, one implementation after the other")
    args = parser.parse_args()
    if args.clock == "cpu" and torch.device(args.device).type != "cpu":
        parser.error("--clock cpu times CPU work only")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.min_run_time = min(args.min_run_time, 0.1)
    record = args.out is not None or args.merge or not (args.quick or args.filter or args.case)

    device = torch.device(args.device)
    stamp = {
        "device": device_name(device),
        "torch": torch.__version__,
        "kdops_version": kdops.__version__,
        "date": datetime.date.today().isoformat(),
        "clock": args.clock,
    }
    header = (
        f"kdops {kdops.__version__} | torch {torch.__version__} (CUDA {torch.version.cuda}) | "
        f"device: {stamp['device']} | {stamp['date']} | {args.clock} clock"
    )
    print(header)
    records = []
    seen: set[tuple[str, str]] = set()
    for family in args.ops.split(","):
        module = importlib.import_module(f"benchmarks.cases_{family}")
        for case in module.cases(device):
            if (args.filter and args.filter not in case.op) or (args.case and args.case not in case.case):
                continue
            if args.quick:
                if (case.op, case.case) in seen:
                    continue
                seen.add((case.op, case.case))
                case.impls = [impl for impl in case.impls if impl.name != "compile"]
            print(f"{case.op} {case.case} {case.shape} {case.pass_}", flush=True)
            records += run_case(case, device, args.min_run_time, stamp, args.clock)
    table = markdown(records, header)
    print()
    print(table)
    if not record:
        return
    out = args.out or RESULTS / device_slug(device)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        records = merged(json.loads((out / "results.json").read_text()), records)
        dates = sorted({r["date"] for r in records})
        header = header.replace(stamp["date"], " and ".join(dates) + " (each row's date in results.json)")
        table = markdown(records, header)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    (out / "results.md").write_text(table + "\n")
    plot(records, out / "results.png", header)
    print(f"wrote {out}/results.json, results.md, results.png")


if __name__ == "__main__":
    main()
