"""Build kdops._C: CPU kernels always, CUDA kernels when a CUDA toolkit and a CUDA torch are present;
and kdops._C_sim (the CUDA kernels run on the CPU by the project's CUDA simulator) on request.

Environment:
  KDOPS_CUDA=0|1          force the CUDA kernels off / on (default: on iff CUDA_HOME and torch.version.cuda)
  KDOPS_SIM=0|1|only      also (only: just) build kdops._C_sim: csrc/kdops.cpp and csrc/cuda/*.{cu,cpp} compiled by g++
                          as C++ against csrc/sim/cuda_sim.h, ops under torch.ops.kdops_sim taking
                          CPU tensors (default 0; `make test` and CI set 1). Needs no CUDA toolkit.
  KDOPS_SIM_COVERAGE=1    compile kdops._C_sim with gcov instrumentation (--coverage)
  KDOPS_SIM_SANITIZE=address
                          build only kdops._C_sim, with ASan+UBSan (for `make sim-asan`; load it
                          with the ASan runtime preloaded). TSan: `make sim-tsan`, a standalone runner
  TORCH_CUDA_ARCH_LIST    archs to build for (default "8.0;8.6;8.9;9.0;10.0+PTX": A100/A10, L4/L40S/4090,
                          H100/H200, B200, PTX for newer GPUs; 8.0 is the minimum: bf16 tensor cores)
  KDOPS_NVCC_THREADS      nvcc --threads, the archs of one .cu compiled in parallel (default 2)
  MAX_JOBS                parallel compile jobs (torch's ninja build reads it)
  DEBUG=1                 -O0 -g, no fast-math
"""

import glob
import os
import platform
import re
import subprocess
import sys

import setuptools

# pyproject.toml's SPDX license string needs setuptools 77; an older one (a fresh Python 3.11
# venv has 65.5) rejects it with a schema error that does not say so. --no-build-isolation
# skips pyproject's build requirements, so check here.
if tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2]) < (77, 0):
    sys.exit(f"kdops needs setuptools>=77 to build (found {setuptools.__version__}): "
             "pip install --upgrade pip setuptools wheel ninja")

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"


def _cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        # torch guesses CUDA_HOME from `which nvcc`, which on some machines is a wrapper in
        # /usr/local/bin, and then links against /usr/local/lib64: point it at the real toolkit.
        home = "/usr/local/cuda"
    return home


def _want_cuda() -> bool:
    forced = os.environ.get("KDOPS_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            sys.exit(f"KDOPS_CUDA must be 0 or 1, got {forced!r}")
        if forced == "1" and (torch.version.cuda is None or _cuda_home() is None):
            sys.exit(
                "KDOPS_CUDA=1 but "
                + ("this torch is a CPU build" if torch.version.cuda is None else "no CUDA toolkit was found")
                + ": install a CUDA build of torch and set CUDA_HOME to the toolkit (e.g. /usr/local/cuda)."
            )
        return forced == "1"
    # Never torch.cuda.is_available(): build machines often have a toolkit but no GPU.
    return torch.version.cuda is not None and _cuda_home() is not None


def _check_nvcc(cuda_home: str) -> None:
    out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "-V"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.(\d+)", out)
    if found is None:
        sys.exit(f"could not read the nvcc version from {cuda_home}/bin/nvcc -V")
    nvcc_major = int(found.group(1))
    torch_major = int(torch.version.cuda.split(".")[0])
    if nvcc_major != torch_major:
        sys.exit(
            f"nvcc {found.group(1)}.{found.group(2)} (in {cuda_home}) does not match torch's CUDA "
            f"{torch.version.cuda}: set CUDA_HOME to a CUDA {torch_major}.x toolkit, install a torch "
            f"built for CUDA {nvcc_major}, or build CPU-only with KDOPS_CUDA=0."
        )


DEFAULT_ARCHS = "8.0;8.6;8.9;9.0;10.0+PTX"


def _arch_list() -> tuple[str, int]:
    """TORCH_CUDA_ARCH_LIST (or the default) checked, and the arch whose PTX is embedded
    (e.g. 100 for "10.0+PTX"; 0 when none) for kdops.info."""
    value = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
    ptx = 0
    for entry in value.replace(",", ";").replace(" ", ";").split(";"):
        if not entry:
            continue
        found = re.fullmatch(r"(\d+)\.(\d+)a?(\+PTX)?", entry)
        if found is None:
            sys.exit(f"TORCH_CUDA_ARCH_LIST entry {entry!r} is not like '9.0' or '10.0+PTX'")
        arch = int(found.group(1)) * 10 + int(found.group(2))
        if arch < 80:
            sys.exit(f"TORCH_CUDA_ARCH_LIST asks for {entry}: kdops needs sm_80 or newer (bf16 tensor cores)")
        if found.group(3):
            ptx = max(ptx, arch)
    return value, ptx


def _nvidia_include_dirs() -> list[str]:
    # ATen's CUDA headers include cusparse.h & co, which pip-installed torch ships in
    # site-packages/nvidia/cu<major>/include rather than in the toolkit.
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for base in nvidia.__path__:
        dirs += glob.glob(os.path.join(base, "cu[0-9]*", "include"))
    return sorted(set(dirs))


def _flag(name: str) -> bool:
    value = os.environ.get(name, "0")
    if value not in ("0", "1"):
        sys.exit(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


# Sanitizer flags of the simulated build. -fno-sanitize=null: UBSan's null check misreads the
# simulator's thread-local shared memory (notes/cuda-on-cpu.md, trap 2). -fno-sanitize-recover:
# a UBSan report fails the run.
_SANITIZERS = {
    "address": ["-fsanitize=address,undefined", "-fno-sanitize=null", "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer"],
}


def _write_if_changed(path: str, text: str) -> None:
    """A generated source, rewritten only when its text changes (else ninja would recompile it),
    and atomically: `make build` runs two setup.py processes at once, and a compiler must never
    read a half-written file."""
    if os.path.exists(path) and open(path).read() == text:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _sim_sources() -> list[str]:
    """One C++ translation unit per .cu file, which only #includes it: the ninja build hands every
    *.cu to nvcc, so g++ gets the CUDA source through a .cpp (the same as `g++ -x c++ file.cu`)."""
    out = os.path.join("build", "sim_sources")
    os.makedirs(out, exist_ok=True)
    sources = []
    for cu in sorted(set(glob.glob("csrc/cuda/*.cu")) - {"csrc/cuda/build_info.cu"}):  # nvcc's archs: nothing to run
        unit = os.path.join(out, os.path.basename(cu).removesuffix(".cu") + ".cpp")
        text = f'// Generated by setup.py: {cu} compiled as C++ for the CUDA simulator.\n#include "{cu.removeprefix("csrc/")}"\n'
        _write_if_changed(unit, text)
        sources.append(unit)
    return sources


def _autograd_unit() -> str:
    """csrc/autograd/*.cpp as one generated translation unit that #includes them all: most of each
    file's compile time is parsing torch's autograd headers (here 28 s of one file at -O2, against
    38 s for all three in one unit), paid once per build instead of once per file."""
    unit = os.path.join("build", "generated", "autograd.cpp")
    os.makedirs(os.path.dirname(unit), exist_ok=True)
    lines = [f'#include "{path.removeprefix("csrc/")}"\n' for path in sorted(glob.glob("csrc/autograd/*.cpp"))]
    text = "// Generated by setup.py: the autograd kernels of every op family, one translation unit.\n" + "".join(lines)
    _write_if_changed(unit, text)
    return unit


def sim_extension(opt: list[str], sanitize: str | None) -> cpp_extension.CppExtension:
    """kdops._C_sim: the op schemas (csrc/kdops.cpp, as torch.ops.kdops_sim), their autograd
    (csrc/autograd), the CUDA kernels (csrc/cuda/*.cu) and their ops (csrc/cuda/*.cpp, the
    tensor_temperature overloads included), built by g++ against the simulator runtime
    (csrc/sim); never csrc/cpu or the CPU kernels of csrc/tensor_temperature.cpp."""
    if sanitize is not None and sanitize not in _SANITIZERS:
        sys.exit(f"KDOPS_SIM_SANITIZE must be one of {sorted(_SANITIZERS)}, got {sanitize!r}")
    runtime = os.path.join(ROOT, "csrc", "sim", "cuda_sim.h")
    # -fno-extern-tls-init: g++ calls a null TLS-init function of the simulator's extern shared
    # memory otherwise (notes/cuda-on-cpu.md, trap 1).
    # csrc/sim/include: the simulator's stand-ins for <mma.h>, <cuda_fp16.h>, ... that kernels include.
    cxx = opt + ["-std=c++20", "-include", runtime, "-isystem", os.path.join(ROOT, "csrc", "sim", "include"),
                 "-fno-extern-tls-init", "-Wno-unknown-pragmas"]
    link = ["-ldl"]  # the runtime names kernels in its errors with dladdr
    if _flag("KDOPS_SIM_COVERAGE"):
        cxx += ["--coverage"]
        link += ["--coverage"]
    if sanitize is not None:
        cxx += _SANITIZERS[sanitize]
        link += _SANITIZERS[sanitize]
    return cpp_extension.CppExtension(
        "kdops._C_sim",
        ["csrc/kdops.cpp", _autograd_unit()] + sorted(glob.glob("csrc/sim/*.cpp")) + _sim_sources()
        + sorted(glob.glob("csrc/cuda/*.cpp")),
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=[("KDOPS_SIM", None), ("KDOPS_NS", "kdops_sim")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


def extensions():
    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    sanitize = os.environ.get("KDOPS_SIM_SANITIZE") or None
    if sanitize is not None:  # a sanitizer build of the simulated kernels, nothing else
        return [sim_extension(["-O1", "-g1"], sanitize)]  # -g1: line tables for the reports, a third less compile time than -g
    mode = os.environ.get("KDOPS_SIM", "0")
    if mode not in ("0", "1", "only"):
        sys.exit(f"KDOPS_SIM must be 0, 1 or only, got {mode!r}")
    sim = [sim_extension(["-O0", "-g"] if DEBUG else ["-O2"], None)] if mode != "0" else []
    return sim if mode == "only" else [main_extension(opt)] + sim


def main_extension(opt: list[str]):
    """kdops._C: the CPU kernels, and the CUDA kernels when building for CUDA."""
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp")) + [_autograd_unit()]
    cxx = opt + ["-std=c++20", "-fopenmp"]
    common = dict(include_dirs=[os.path.join(ROOT, "csrc")], define_macros=[])
    if not _want_cuda():
        return cpp_extension.CppExtension("kdops._C", sources, extra_compile_args={"cxx": cxx}, **common)

    cuda_home = _cuda_home()
    os.environ["CUDA_HOME"] = cuda_home
    cpp_extension.CUDA_HOME = cuda_home
    _check_nvcc(cuda_home)
    archs, ptx_arch = _arch_list()
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    # Each .cu is compiled once per arch: --threads runs those in parallel (ninja already runs
    # MAX_JOBS files at once).
    threads = os.environ.get("KDOPS_NVCC_THREADS", "2")
    nvcc = opt + ["-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", f"--threads={threads}"]
    common["include_dirs"] += _nvidia_include_dirs()
    common["define_macros"] += [("KDOPS_WITH_CUDA", None), ("KDOPS_PTX_ARCH", str(ptx_arch))]
    # The kernels (*.cu, nvcc) and the ops around them (*.cpp, the host compiler: only these
    # include ATen, which nvcc's front ends would otherwise parse once per arch).
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    return cpp_extension.CUDAExtension("kdops._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **common)


def _version() -> str:
    """kdops/_version.py's release with a local tag naming the torch and CUDA it is built for
    (0.1.0+pt2141cu130, 0.1.0+pt2141cpu), as torch-scatter and flash-attn tag their wheels: the
    binary runs with that torch release only. The sdist, which builds for any torch, has none."""
    release = re.search(r'__version__ = "([^"]+)"', open(os.path.join(ROOT, "kdops", "_version.py")).read()).group(1)
    if "sdist" in sys.argv:  # the source builds for any torch: no tag
        return release
    major, minor, patch = (re.findall(r"\d+", torch.__version__) + ["0", "0", "0"])[:3]
    device = "cu" + torch.version.cuda.replace(".", "") if _want_cuda() else "cpu"
    return f"{release}+pt{major}{minor}{patch}{device}"


def _cuda_decision() -> str:
    forced = os.environ.get("KDOPS_CUDA")
    if forced is not None:
        return f"{'on' if forced == '1' else 'off'} (KDOPS_CUDA={forced})"
    if torch.version.cuda is None:
        return "off (this torch is a CPU build)"
    if _cuda_home() is None:
        return "off (torch is a CUDA build but no CUDA toolkit was found: set CUDA_HOME)"
    return f"on (torch is a CUDA {torch.version.cuda} build, toolkit at {_cuda_home()})"


def _summary() -> str:
    """What this build decided and why, printed before compiling (shown by `pip install -v`)."""
    sim = {"0": "off", "1": "on (kdops._C_sim)", "only": "only kdops._C_sim"}.get(os.environ.get("KDOPS_SIM", "0"), "?")
    if os.environ.get("KDOPS_SIM_SANITIZE"):
        sim = f"only kdops._C_sim, with {os.environ['KDOPS_SIM_SANITIZE']} sanitizers"
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or f"{DEFAULT_ARCHS} (default)"
    isa = ("x86-64: loops cloned for x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and the baseline; MaxSim, "
           "Margin-MSE rows and sorting networks in AVX-512 and AVX2, chosen at run time"
           if platform.machine() in ("x86_64", "AMD64") else f"{platform.machine()}: portable loops only")
    lines = [
        f"kdops {_version()} build",
        f"  torch        {torch.__version__} ({os.path.dirname(torch.__file__)})",
        f"  CUDA kernels {_cuda_decision()}",
        f"  CUDA archs   {archs if _want_cuda() else '-'}",
        f"  CPU kernels  {isa}",
        f"  simulator    {sim}",
        f"  compile      {'DEBUG=1: -O0 -g' if DEBUG else '-O3'}; MAX_JOBS={os.environ.get('MAX_JOBS', 'all cores')}",
    ]
    return "\n".join(lines)


class BuildExtension(cpp_extension.BuildExtension):
    def run(self):
        print(_summary(), file=sys.stderr, flush=True)
        super().run()


setup(
    version=_version(),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
)
