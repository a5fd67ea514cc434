"""Static evidence about the compiled CUDA kernels, read from kdops._C with CUDA's cuobjdump
(pip: nvidia-cuda-cuobjdump + nvidia-cuda-nvdisasm), since no GPU checks them here: registers,
shared and local memory per kernel and arch, and whether a kernel's SASS uses tensor cores.

    python -m benchmarks.static_evidence    # writes benchmarks/results/static/kernels.{md,json}

tests/test_static_evidence.py asserts on the same data: HMMA in the fp16/bf16/TF32 MaxSim kernels
and IMMA in maxsim_quantized's int8 one for every sm_80+ cubin, their inner loops fed by LDSM (no generic or global fragment loads),
no local memory (spills) in any kernel."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import kdops._C as _C
from benchmarks.gpu_perf.tools import tool

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "static"
# Tensor-core instructions: HMMA (mma.sync on floats, sm_70+), IMMA (mma.sync on integers),
# HGMMA (wgmma, sm_90a), UTCHMMA & co (sm_100a).
TENSOR_CORE = re.compile(r"\b(HMMA|IMMA|HGMMA|UTC\w*MMA)\b")
# A SASS instruction line: "/*3ba0*/  @P0 LDSM.16.M88.4 R56, [R21] ;" (address, instruction).
INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.+?)\s*;")
BRANCH = re.compile(r"\bBRA\s+(0x[0-9a-f]+)")


@dataclass(frozen=True)
class KernelUsage:
    arch: str  # "sm_90"
    kernel: str  # demangled, shortened
    mangled: str
    registers: int
    shared_bytes: int  # static shared memory as cuobjdump reports it (with the arch's reserve)
    local_bytes: int  # local memory per thread: spills or stack arrays
    stack_bytes: int


def _run(*args: str) -> str:
    cuobjdump = tool("cuobjdump")
    if cuobjdump is None:
        raise RuntimeError("cuobjdump not found: pip install -r requirements-dev.txt")
    nvdisasm = tool("nvdisasm")
    env = dict(os.environ)
    if nvdisasm is not None:  # cuobjdump -sass runs nvdisasm from PATH
        env["PATH"] = os.path.dirname(nvdisasm) + os.pathsep + env.get("PATH", "")
    return subprocess.run([cuobjdump, *args], capture_output=True, text=True, check=True, env=env).stdout


def _demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def _short(demangled: str) -> str:
    """'void kdops::cuda::tensor_core::maxsim_tensor_core_kernel<c10::Half>(...)' ->
    'tensor_core::maxsim_tensor_core_kernel<c10::Half>'."""
    name = demangled.removeprefix("void ").replace("(anonymous namespace)::", "").split("(")[0]
    return name.replace("kdops::cuda::", "")


def _arch_number(arch: str) -> int:
    return int(re.sub(r"\D", "", arch))


def library() -> str:
    return _C.__file__


def resource_usage(lib: str | None = None) -> list[KernelUsage]:
    """Every kernel of every cubin in the library (cuobjdump -res-usage)."""
    text = _run("-res-usage", lib or library())
    rows, arch, fn = [], None, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("=")[1].strip()
        elif line.startswith("Function ") and line.endswith(":"):
            fn = line[len("Function ") : -1]
        elif fn is not None and line.startswith("REG:"):
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            rows.append((arch, fn, int(fields["REG"]), int(fields["SHARED"]), int(fields["LOCAL"]), int(fields["STACK"])))
            fn = None
    names = _demangle(sorted({r[1] for r in rows}))
    return [KernelUsage(a, _short(names[f]), f, reg, shared, local, stack) for a, f, reg, shared, local, stack in rows]


def sass(mangled: str, lib: str | None = None) -> dict[str, list[tuple[int, str]]]:
    """One kernel's SASS per arch as (address, instruction) pairs (cuobjdump -sass -fun)."""
    text = _run("-sass", "-fun", mangled, lib or library())
    code, arch = {}, None
    for line in text.splitlines():
        if line.strip().startswith("arch = "):
            arch = line.split("=")[1].strip()
            code.setdefault(arch, [])
        elif arch is not None and (m := INSTRUCTION.match(line)):
            code[arch].append((int(m.group(1), 16), m.group(2)))
    return code


def tensor_core_instructions(mangled: str, lib: str | None = None) -> dict[str, int]:
    """Tensor-core SASS instructions of one kernel per arch."""
    return {arch: sum(bool(TENSOR_CORE.search(i)) for _, i in code) for arch, code in sass(mangled, lib).items()}


def opcode(instruction: str) -> str:
    """'@!P0 LDSM.16.M88.4 R56, [R21]' -> 'LDSM.16.M88.4'."""
    words = instruction.split()
    return words[1] if words[0].startswith("@") else words[0]


def inner_tensor_core_loops(code: list[tuple[int, str]]) -> list[list[str]]:
    """The innermost loops holding a tensor-core instruction: each the instructions from a backward
    branch's target to the branch, for the branches whose range holds tensor-core instructions and
    no other such range."""
    ranges = []
    for address, instruction in code:
        m = BRANCH.search(instruction)
        if m and int(m.group(1), 16) <= address:
            body = [i for a, i in code if int(m.group(1), 16) <= a <= address]
            if any(TENSOR_CORE.search(i) for i in body):
                ranges.append((int(m.group(1), 16), address, body))
    return [body for lo, hi, body in ranges
            if not any((lo, hi) != (l2, h2) and lo <= l2 and h2 <= hi for l2, h2, _ in ranges)]


def tensor_core_kernels(usage: list[KernelUsage]) -> list[str]:
    """The mangled names of the MaxSim tensor-core kernels: mma.sync (fp16/bf16; maxsim_quantized's
    int8 and fp16) and WMMA (TF32)."""
    names = ("maxsim_mma_kernel", "maxsim_tensor_core_kernel", "maxsim_serving_kernel")
    return sorted({u.mangled for u in usage if any(n in u.kernel for n in names)})


def main() -> None:
    usage = resource_usage()
    hmma = {m: tensor_core_instructions(m) for m in tensor_core_kernels(usage)}
    OUT.mkdir(parents=True, exist_ok=True)
    # Tensor-core instructions are counted in the MaxSim tensor-core kernels only (None elsewhere).
    records = [asdict(u) | {"tensor_core_instructions": hmma[u.mangled].get(u.arch) if u.mangled in hmma else None} for u in usage]
    (OUT / "kernels.json").write_text(json.dumps(records, indent=1) + "\n")
    lines = [
        "# Registers and memory per CUDA kernel (static, from cuobjdump; no GPU run)",
        "",
        f"Library: kdops._C built for {', '.join(sorted({u.arch for u in usage}, key=_arch_number))}. Shared = static shared "
        "memory as cuobjdump reports it (from sm_90 on it adds the block's 1 KiB system reserve); the MaxSim forward kernels "
        "also take dynamic shared memory at launch. Local = bytes per thread of local memory (0: no spills). "
        "TC = tensor-core SASS instructions (HMMA/IMMA/HGMMA) in the MaxSim tensor-core kernels (- = not counted).",
        "",
        "| arch | kernel | registers | shared (B) | local (B) | stack (B) | TC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["kernel"], _arch_number(r["arch"]))):
        lines.append(
            f"| {r['arch']} | `{r['kernel']}` | {r['registers']} | {r['shared_bytes']} | {r['local_bytes']} "
            f"| {r['stack_bytes']} | {'-' if r['tensor_core_instructions'] is None else r['tensor_core_instructions']} |"
        )
    (OUT / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
