"""CUDA's binary tools: next to this Python's pip-installed nvidia packages (nvidia-cuda-cuobjdump,
nvidia-cuda-nvdisasm), in CUDA_HOME, or on PATH. One lookup for the model and for
benchmarks/static_evidence.py (this module imports no kdops, so the model runs without a build)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path


def tool(name: str) -> str | None:
    try:
        import nvidia

        for base in nvidia.__path__:
            for found in sorted(Path(base).glob(f"cu*/bin/{name}")):
                return str(found)
    except ImportError:
        pass
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if os.path.exists(os.path.join(home, "bin", name)):
        return os.path.join(home, "bin", name)
    return shutil.which(name)


def _cuobjdump(*args: str) -> str:
    cuobjdump, nvdisasm = tool("cuobjdump"), tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        raise RuntimeError("cuobjdump/nvdisasm not found: pip install -r requirements-dev.txt")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([cuobjdump, *args], capture_output=True, text=True, check=True, env=env).stdout


def cuobjdump_sass(cubin: str) -> str:
    return _cuobjdump("-sass", cubin)


def registers(cubin: str) -> dict[str, int]:
    """Registers per thread of every function in a cubin (cuobjdump -res-usage)."""
    out, name = {}, None
    for line in _cuobjdump("-res-usage", cubin).splitlines():
        f = re.search(r"Function (\S+):", line)
        if f:
            name = f.group(1)
        r = re.search(r"REG:(\d+)", line)
        if r and name:
            out[name] = int(r.group(1))
    return out
