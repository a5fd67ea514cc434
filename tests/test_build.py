"""The built library: every op has the kernels the build promised, and kdops.info says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import torch

import kdops


def _cuda_build_expected() -> bool:
    """setup.py's rule: CUDA kernels unless KDOPS_CUDA=0, when torch is a CUDA build and a
    toolkit is found. CI meets it, so a CUDA source that fails to build fails CI."""
    if os.environ.get("KDOPS_CUDA") == "0" or torch.version.cuda is None:
        return False
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return os.path.exists(os.path.join(home, "bin", "nvcc")) or shutil.which("nvcc") is not None


def test_build_matches_toolchain():
    assert kdops.build_info()["cuda_kernels"] == _cuda_build_expected()


def test_every_op_has_a_cpu_kernel_and_a_cuda_kernel_when_built_with_cuda():
    info = kdops.build_info()
    assert info["ops"], "no kdops op is registered"
    for op, backends in info["ops"].items():
        assert "CPU" in backends, f"{op} has no CPU kernel"
        if info["cuda_kernels"]:
            assert "CUDA" in backends, f"{op} has no CUDA kernel"
    if info["cuda_kernels"]:
        assert info["cuda_archs"], "CUDA kernels built for no arch"


def test_every_forward_op_has_a_backward_op():
    ops = set(kdops.build_info()["ops"])
    for op in ops:
        if not op.endswith("_backward"):
            assert f"{op}_backward" in ops, f"{op} has no backward op"


def test_info_command_lists_every_op():
    out = subprocess.run([sys.executable, "-m", "kdops.info"], capture_output=True, text=True, check=True).stdout
    assert "CUDA kernels compiled" in out
    for op in kdops.build_info()["ops"]:
        assert op in out
