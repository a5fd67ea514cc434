"""The mutation test of the simulated CUDA kernels (`make mutants`; outside CI's time budget).

Each mutant of tests/mutants/corpus.toml is a realistic GPU bug planted in csrc/cuda/ (a removed
barrier or fence, an off-by-one bound, a wrong shuffle lane or width, a wrong shared-memory slot,
a removed zero-fill, a plain increment for an atomic, ...). For each one this script
  1. replaces the mutant's `old` text (which must occur exactly once) by `new` in its file,
  2. rebuilds kdops._C_sim in place (only the translation units the file reaches),
  3. runs the sim lanes: pytest -m sim over the test files of the mutated file (stopping at the
     first failure), then, for mutants marked `tsan`, the ThreadSanitizer runner (make sim-tsan),
  4. restores the file, always,
and prints a kill table: which lane killed each mutant, with the first line of its message.
Mutants listed as `equivalent` (with the reason) are applied and run like the others, and are
expected to survive. At the end kdops._C_sim is rebuilt from the restored sources.

    python -m tests.mutants.run_mutants                 # every mutant
    python -m tests.mutants.run_mutants --only ID ...   # some
    python -m tests.mutants.run_mutants --check         # only that every snippet applies
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).with_name("corpus.toml")

# The sim tests that run a file's kernels, fastest and most targeted first (pytest -x stops at
# the first failure). Helpers every family uses run every family's tests.
SCHEDULES = ["tests/test_sim_schedules.py", "tests/test_simulated_kernels.py"]
MARGIN = ["tests/test_margin_mse.py"]
MAXSIM = ["tests/test_maxsim.py", "tests/test_maxsim_tf32.py"]
LISTS = ["tests/test_plackett_luce.py", "tests/test_learned_temperature.py"]
SERVING = ["tests/test_maxsim_serving.py"]
HELPERS = ["tests/sim/test_schedules.py", *SCHEDULES, *MARGIN, *MAXSIM, *LISTS]
FILE_TESTS = {
    "block_reduce.cuh": HELPERS,
    "block_scan.cuh": HELPERS,
    "grid_sum.cuh": ["tests/sim/test_schedules.py", *SCHEDULES, *MARGIN, *LISTS, *SERVING],  # grid_none: arrives_last
    "warp_shuffle.cuh": HELPERS,
    "warp_scan.cuh": HELPERS,
    "warp_sort.cuh": [*SCHEDULES, *LISTS],
    "launch.cuh": HELPERS,
    "margin_mse_kernels.cu": [*SCHEDULES, *MARGIN],
    "margin_mse_cuda.cpp": [*SCHEDULES, *MARGIN],
    "maxsim_kernels.cu": [*SCHEDULES, *MAXSIM],
    "maxsim_doc_grad.cuh": [*SCHEDULES, *MAXSIM],
    "maxsim_query_grad.cuh": [*SCHEDULES, *MAXSIM],
    "maxsim_tensor_core.cuh": [*SCHEDULES, *MAXSIM],
    "maxsim_mma.cuh": [*SCHEDULES, *MAXSIM],
    "maxsim_groups.cuh": [*SCHEDULES, *MAXSIM],
    "mma_ptx.cuh": ["tests/sim/test_mma_ptx.py", *SCHEDULES, *MAXSIM],
    "maxsim_cuda.cpp": [*SCHEDULES, *MAXSIM],
    "plackett_luce_kernels.cu": [*SCHEDULES, *LISTS],
    "plackett_luce_warp_kernels.cu": [*SCHEDULES, *LISTS],
    "plackett_luce_device.cuh": [*SCHEDULES, *LISTS],
    "plackett_luce_cuda.cpp": [*SCHEDULES, *LISTS],
    "listwise_kd_kernels.cu": [*SCHEDULES, *LISTS],
    "grid_none.cuh": SERVING,
    "maxsim_serving_mma.cuh": SERVING,
    "maxsim_serving_kernels.cu": SERVING,
}


@dataclass
class Mutant:
    id: str
    file: str
    kind: str
    bug: str
    old: str
    new: str
    tsan: bool = False
    equivalent: str = ""


@dataclass
class Outcome:
    result: str  # "killed", "survived", "compile error", "not applied"
    lane: str = ""
    evidence: str = ""
    seconds: float = 0.0


def load() -> list[Mutant]:
    data = tomllib.loads(CORPUS.read_text())
    return [Mutant(id=m["id"], file=m["file"], kind=m["class"], bug=m["bug"], old=m["old"], new=m["new"],
                   tsan=m.get("tsan", False), equivalent=m.get("equivalent", "")) for m in data["mutant"]]


def occurrences(m: Mutant) -> int:
    return (REPO / m.file).read_text().count(m.old)


def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, 124, out + f"\nTIMEOUT after {timeout:.0f} s", "")


def build(build_temp: str) -> subprocess.CompletedProcess:
    env = {"KDOPS_SIM": "only", "KDOPS_SIM_COVERAGE": "0", "MAX_JOBS": os.environ.get("MAX_JOBS", "1")}
    return run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--build-temp", build_temp], 3600, env)


def first_failure(out: str) -> str:
    """The first failing test and the first line of its error (the simulator's message or a
    sanitizer report's title where there is one), from pytest -q output."""
    failed = next((line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    errors = [line.strip() for line in out.splitlines() if line.startswith("E ")]
    error = next((e for e in errors if "ThreadSanitizer:" in e or "kdops.sim:" in e), errors[0] if errors else "")
    if "ThreadSanitizer: data race" in error:
        error = "E   ThreadSanitizer: data race" + error.split("ThreadSanitizer: data race", 1)[1].split("\\n", 1)[0]
    crash = next((line.strip() for line in out.splitlines() if "Fatal Python error" in line or "Aborted" in line), "")
    return " | ".join(x for x in (failed, error or crash) if x)[:300]


def lanes(m: Mutant, python: str) -> Outcome:
    tests = FILE_TESTS[Path(m.file).name]
    # The simulator's own tests (tests/sim: programs built from the helpers' source) carry no sim
    # mark; the op test files run their sim-backend tests only.
    own = [t for t in tests if t.startswith("tests/sim/")]
    ops = [t for t in tests if t not in own]
    for lane, selection in (("pytest tests/sim", own), ("pytest -m sim", ["-m", "sim", *ops])):
        if not selection:
            continue
        proc = run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selection], 3600)
        if proc.returncode != 0:
            return Outcome("killed", lane, first_failure(proc.stdout + proc.stderr) or f"exit {proc.returncode}")
    if m.tsan:
        proc = run(["make", f"PY={python}", "DEPS=", "sim-tsan"], 3600)
        if proc.returncode != 0:
            text = proc.stdout + proc.stderr
            line = next((x.strip() for x in text.splitlines() if "ThreadSanitizer" in x or x.startswith("FAIL")), "")
            return Outcome("killed", "sim-tsan", line[:300] or f"exit {proc.returncode}")
    return Outcome("survived")


def try_mutant(m: Mutant, build_temp: str, python: str) -> Outcome:
    path = REPO / m.file
    original = path.read_text()
    if original.count(m.old) != 1:
        return Outcome("not applied", evidence=f"`old` occurs {original.count(m.old)} times")
    start = time.time()
    try:
        path.write_text(original.replace(m.old, m.new))
        proc = build(build_temp)
        if proc.returncode != 0:
            error = next((x for x in proc.stdout.splitlines() + proc.stderr.splitlines() if "error" in x), "")
            outcome = Outcome("compile error", "build", error.strip()[:300])
        else:
            outcome = lanes(m, python)
    finally:
        path.write_text(original)
    outcome.seconds = time.time() - start
    return outcome


def table(rows: list[tuple[Mutant, Outcome]]) -> str:
    lines = ["| mutant | file | class | result | lane | first message |", "|---|---|---|---|---|---|"]
    for m, o in rows:
        result = o.result + (" (equivalent)" if m.equivalent else "")
        lines.append(f"| {m.id} | {Path(m.file).name} | {m.kind} | {result} | {o.lane} | {o.evidence.replace('|', '/')} |")
    real = [(m, o) for m, o in rows if not m.equivalent and o.result in ("killed", "survived")]
    killed = sum(o.result == "killed" for _, o in real)
    lines.append("")
    lines.append(f"killed {killed} of {len(real)} non-equivalent mutants that built"
                 f" ({100 * killed / max(len(real), 1):.0f}%); equivalent: {sum(bool(m.equivalent) for m, _ in rows)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="mutant ids to run, in this order (default: all)")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies")
    parser.add_argument("--build-temp", default="build/mutants", help="the incremental build folder")
    parser.add_argument("--python", default=sys.executable, help="the interpreter `make sim-tsan` uses")
    parser.add_argument("--report", default="build/mutants/kill_table.md", help="where the table is written")
    args = parser.parse_args()

    mutants = load()
    ids = [m.id for m in mutants]
    assert len(ids) == len(set(ids)), "mutant ids must be unique"
    bad = [(m.id, occurrences(m)) for m in mutants if occurrences(m) != 1]
    unknown = [m.id for m in mutants if Path(m.file).name not in FILE_TESTS]
    if bad or unknown:
        print(f"mutants whose `old` does not occur exactly once: {bad}; files without tests: {unknown}")
        return 1
    if args.check:
        print(f"{len(mutants)} mutants apply")
        return 0
    by_id = {m.id: m for m in mutants}
    chosen = [by_id[i] for i in args.only] if args.only else mutants  # in the order given
    rows = []
    try:
        for m in chosen:
            outcome = try_mutant(m, args.build_temp, args.python)
            rows.append((m, outcome))
            print(f"{m.id}: {outcome.result} {outcome.lane} ({outcome.seconds:.0f} s) {outcome.evidence}", flush=True)
    finally:
        report = table(rows)
        print(report)
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report + "\n")
        restored = build(args.build_temp)  # kdops._C_sim of the restored sources
        if restored.returncode != 0:
            print("rebuilding kdops._C_sim from the restored sources failed:\n" + restored.stderr[-2000:])
    survivors = [m.id for m, o in rows if o.result == "survived" and not m.equivalent]
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
