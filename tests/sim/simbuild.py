"""Builds the CUDA simulator's test programs with g++, once per test session and build mode.

The programs compile exactly as the kdops.sim extension does (one .cu file plus csrc/sim's
sources, all with the simulator's flags), and need only g++ and this repository: no torch,
so each build takes seconds.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIM_DIR = REPO / "csrc" / "sim"
PROGRAMS = Path(__file__).resolve().parent / "programs"

# The flags every simulated translation unit gets (the contract with setup.py's kdops._C_sim).
SIM_FLAGS = [
    "-std=c++20",  # as torch's headers require
    "-x", "c++",
    "-DKDOPS_SIM",
    "-include", str(SIM_DIR / "cuda_sim.h"),
    "-fno-extern-tls-init",  # g++ 12 calls a null TLS init function through the PLT without it
    f"-I{REPO}",
    f"-I{REPO / 'csrc'}",  # as the kernels include the project's helpers: "cuda/block_reduce.cuh"
    "-isystem", str(SIM_DIR / "include"),
]
RUNTIME_SOURCES = sorted(SIM_DIR.glob("*.cpp"))

# -g1: line tables, all a sanitizer report needs for the file:line the tests look for (a third
# less compile time than -g).
MODES = {
    "plain": ["-O2", "-g1"],
    # UBSan's null check misfires on TLS accesses in executables (the linker relaxes the
    # instruction it tests); bounds is the check that sees static __shared__ arrays.
    "asan": ["-O1", "-g1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize=null",
             "-fno-sanitize-recover=all"],
    "tsan": ["-O1", "-g1", "-fsanitize=thread"],
    # The access recorder (csrc/sim/access_record.h): the program's .cu file also gets RECORD_FLAGS.
    "record": ["-O2", "-g1", "-DKDOPS_SIM_RECORD"],
}

# Every plain load and store of the kernel's translation unit calls __tsan_{read,write}N (defined by
# the recorder; ThreadSanitizer's runtime is not linked). Only the .cu file: the simulator itself is
# not recorded.
RECORD_FLAGS = ["-fsanitize=thread"]

SANITIZER_ENV = {
    # detect_stack_use_after_return: fiber switches must keep ASan's fake stacks consistent too.
    "ASAN_OPTIONS": "detect_leaks=0:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": "print_stacktrace=1",
    "TSAN_OPTIONS": "halt_on_error=1:report_signal_unsafe=0",
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The simulator's error message ("" if the case did not raise)."""
        return self.stdout.split("ERROR: ", 1)[1] if self.returncode == 3 and "ERROR: " in self.stdout else ""


class Program:
    def __init__(self, path: Path):
        self.path = path

    def run(self, case: str, seed: int = 0, shuffle: str = "", timeout: float = 120) -> Run:
        env = dict(os.environ, **SANITIZER_ENV)
        proc = subprocess.run([str(self.path), case, str(seed), shuffle], capture_output=True, text=True,
                              timeout=timeout, env=env)
        return Run(proc.returncode, proc.stdout, proc.stderr)


class Builder:
    """Compiles programs/<name>.cu per mode into a session temporary directory."""

    def __init__(self):
        self.out = Path(tempfile.mkdtemp(prefix="kdops-sim-tests-"))

    @functools.lru_cache(maxsize=None)
    def supported(self, mode: str) -> str:
        """"" if g++ can build and run `mode` here, else why not."""
        if shutil.which("g++") is None:
            return "g++ is not installed"
        if mode == "plain":
            return ""
        probe = self.out / f"probe-{mode}"
        source = self.out / "probe.cpp"
        source.write_text("int main() { return 0; }\n")
        proc = subprocess.run(["g++", *MODES[mode], str(source), "-o", str(probe)], capture_output=True, text=True)
        if proc.returncode != 0:
            return f"g++ cannot build with {' '.join(MODES[mode])}: {proc.stderr.strip()[:200]}"
        run = subprocess.run([str(probe)], capture_output=True, text=True, env=dict(os.environ, **SANITIZER_ENV))
        if run.returncode != 0:
            return f"a {mode} program does not run here: {run.stderr.strip()[:200]}"
        return ""

    @functools.lru_cache(maxsize=None)
    def runtime(self, mode: str) -> tuple[str, ...]:
        """csrc/sim's sources compiled once per mode, as objects every program of that mode links
        (they are most of a program's compile time, and the same in every program)."""
        out = self.out / f"runtime-{mode}"
        out.mkdir()
        objects = []
        for source in RUNTIME_SOURCES:
            obj = out / f"{source.stem}.o"
            _compile(["g++", *MODES[mode], *SIM_FLAGS, "-c", str(source), "-o", str(obj)], f"{source.name} ({mode})")
            objects.append(str(obj))
        return tuple(objects)

    @functools.lru_cache(maxsize=None)
    def program(self, name: str, mode: str, source: Path | None = None, compile_flags: tuple[str, ...] = (),
                link_flags: tuple[str, ...] = ()) -> Program:
        """programs/<name>.cu (or `source`) built in `mode`; the extra flags are for programs that
        include more than the simulator (benchmarks/gpu_perf/accesses.py: c10's headers). In
        "record" mode only the .cu file is instrumented (RECORD_FLAGS), not the runtime."""
        exe = self.out / f"{name}-{mode}"
        obj = self.out / f"{name}-{mode}.o"
        source = source or PROGRAMS / f"{name}.cu"
        record = RECORD_FLAGS if mode == "record" else []
        _compile(["g++", *MODES[mode], *record, *SIM_FLAGS, *compile_flags, "-c", str(source), "-o", str(obj)],
                 f"{name} ({mode})")
        _compile(["g++", *MODES[mode], str(obj), *self.runtime(mode), *link_flags, "-o", str(exe), "-pthread",
                  "-ldl", "-rdynamic"], f"{name} ({mode}), linking")
        return Program(exe)


def _compile(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building {what} failed:\n{' '.join(cmd)}\n{proc.stderr}")


def line_of(marker: str, name: str = "sim_cases") -> str:
    """ "sim_cases.cu:<n>" for the source line tagged `// @marker`."""
    lines = (PROGRAMS / f"{name}.cu").read_text().splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if re.search(rf"// @{re.escape(marker)}(?![\w-])", line)]
    assert len(hits) == 1, f"marker @{marker} must tag exactly one line, found {hits}"
    return f"{name}.cu:{hits[0]}"


def access_report(stdout: str, exe: Path) -> list[dict]:
    """The access recorder's report lines (csrc/sim/access_record.h) as dicts, numbers as ints and
    each site as "path:line" relative to the repository: a plain access's code address resolved by
    addr2line to its innermost inlined frame outside the simulator's headers (csrc/sim)."""
    rows = []
    for line in stdout.splitlines():
        if not line.startswith("kdops.sim.access\t"):
            continue
        row = dict(field.split("=", 1) for field in line.split("\t")[1:])
        rows.append({k: int(v) if v.isdigit() else v for k, v in row.items()})
    pcs = sorted({r["site"][3:] for r in rows if r["site"].startswith("pc:")})
    where = _source_lines(exe, pcs) if pcs else {}
    for r in rows:
        site = where[r["site"][3:]] if r["site"].startswith("pc:") else r["site"]
        r["site"] = site.removeprefix(f"{REPO}/")
    return rows


def _source_lines(exe: Path, pcs: list[str]) -> dict[str, str]:
    out = subprocess.run(["addr2line", "-e", str(exe), "-i", "-a", *pcs], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    frames: dict[str, list[str]] = {}
    for line in out:
        if line.startswith("0x"):
            current = frames.setdefault(f"0x{int(line, 16):x}", [])
        elif not line.startswith("??"):
            current.append(line.split(" (discriminator")[0].strip())
    # The innermost frame outside the simulator's headers; else (code of csrc/sim inlined into the
    # kernel, e.g. a WMMA stand-in) the outermost.
    return {pc: next((f for f in fs if not f.startswith(str(SIM_DIR))), fs[-1] if fs else "?:0")
            for pc, fs in frames.items()}
