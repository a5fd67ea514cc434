"""The built library: every op has the kernels the build promised, and kdops.info says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
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


def test_default_build_covers_every_current_gpu_arch():
    """Without TORCH_CUDA_ARCH_LIST, kdops is built for A100/A10 (sm_80/86), L4/L40S/4090
    (sm_89), H100/H200 (sm_90) and B200 (sm_100), with PTX for GPUs newer than those; the
    archs come from the compiled library itself (__CUDA_ARCH_LIST__), so a narrower build fails."""
    info = kdops.build_info()
    if not info["cuda_kernels"] or os.environ.get("TORCH_CUDA_ARCH_LIST"):
        pytest.skip("a CPU-only build, or TORCH_CUDA_ARCH_LIST chose the archs")
    assert info["cuda_archs"] == ["sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "compute_100"]
    out = subprocess.run([sys.executable, "-m", "kdops.info"], capture_output=True, text=True, check=True).stdout
    assert "sm_80, sm_86, sm_89, sm_90, sm_100, compute_100" in out


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
