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


def test_every_op_has_an_autograd_formula():
    """Forward ops differentiate through a backward op (listmle reuses plackett_luce_loss's);
    backward ops register one too, which refuses double backward with a clear error."""
    ops = kdops.build_info()["ops"]
    for op in ops:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kdops::{op}", "Autograd"), f"{op} has no autograd"
    assert {op for op in ops if op.endswith("_backward")} >= {"margin_mse_backward", "maxsim_backward", "plackett_luce_loss_backward"}


def test_info_command_lists_every_op():
    out = subprocess.run([sys.executable, "-m", "kdops.info"], capture_output=True, text=True, check=True).stdout
    assert "CUDA kernels compiled" in out
    for op in kdops.build_info()["ops"]:
        assert op in out
