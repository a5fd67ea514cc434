"""No op reads device memory back to the host, forward or backward: a read is a device sync
(the GPU drains before the host goes on) and makes CUDA-graph capture (`torch.cuda.graph`,
`torch.compile(mode="reduce-overhead")`) impossible. Checks of argument values on device
tensors are device-side asserts instead (`assert_on_device` in csrc/common/checks.h).

On the simulator, whose CPU tensors stand for device memory, the profiler records every ATen op
that an op's host code dispatches, nested ones included: none may be a host read. On a GPU,
torch's sync debug mode raises on any synchronising call. Where neither can see a read
(`Tensor.cpu()` of the simulator's CPU tensors returns them as they are), the sources are read:
no copy to the host in the CUDA host code, the autograd kernels or the shared checks."""

from __future__ import annotations

import contextlib
import pathlib
import re

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import kdops

from tests.helpers import cuda_kernel_devices
from tests.op_cases import OP_CASES
from tests.raw_calls import RAW_OPS, build, ops_for

# ATen ops that read a tensor's values on the host (or need them for an output shape).
HOST_READS = {
    "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal", "aten::allclose",
    "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_consecutive",
    "aten::unique_dim", "aten::bincount", "aten::histc",
}
# at::_assert_async is the device-side check: on the simulator's CPU tensors its kernel reads the
# flag at once (what a GPU does later, asynchronously), so reads inside it are not the op's.
DEVICE_ASSERTS = {"aten::_assert_async"}


def host_reads(fn) -> list[str]:
    """Runs fn() under the profiler and lists the host reads it dispatched (with their callers)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    reads = []
    for event in prof.events():
        if event.name not in HOST_READS:
            continue
        chain, parent = [event.name], event.cpu_parent
        while parent is not None and parent.name not in DEVICE_ASSERTS:
            chain.append(parent.name)
            parent = parent.cpu_parent
        if parent is None:
            reads.append(" <- ".join(chain))
    return reads


@contextlib.contextmanager
def no_sync_on_gpu(device: str):
    """On a GPU: torch raises on any synchronising CUDA call inside the block."""
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _backend(request) -> str:
    return request.node.callspec.params["device"]


def _with_number_masks(args: dict) -> dict:
    """The same call with its masks as float 0/1 tensors (their values are checked too)."""
    return {k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.bool else v for k, v in args.items()}


@cuda_kernel_devices
@pytest.mark.parametrize("raw", RAW_OPS, ids=lambda r: r.name)
@pytest.mark.parametrize("size", range(6))  # MaxSim's three layouts twice, every reduction
@pytest.mark.parametrize("number_masks", [False, True], ids=["bool-masks", "number-masks"])
def test_raw_ops_read_nothing_back_to_the_host(request, device, raw, size, number_masks):
    backend = _backend(request)
    args = build(raw.name, seed=size, size=size, device=backend)
    if number_masks:
        args = _with_number_masks(args)
    op = getattr(ops_for(backend), raw.name).default
    with no_sync_on_gpu(backend):
        assert host_reads(lambda: op(**args)) == [], raw.name


@cuda_kernel_devices
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("size", [1, 5])
def test_public_ops_forward_and_backward_read_nothing_back(request, device, case, size):
    args, kwargs = case.make(torch.Generator().manual_seed(size), size, device, torch.float32)
    args = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]

    def step():
        case.kdops_fn(*args, **kwargs).sum().backward()

    with no_sync_on_gpu(_backend(request)):
        assert host_reads(step) == [], case.name


@cuda_kernel_devices
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n", [7, 300], ids=["a warp a row", "a block a row"])
def test_a_step_with_learned_temperatures_reads_nothing_back(request, device, reduction, n):
    """Temperatures given as 0-dim tensors that require grad, in device memory (a learned
    temperature): the kernels read them there, flag their values for a device-side assert, and
    compute their gradients with the scores' (no host read, no sync, forward or backward)."""
    gen = torch.Generator().manual_seed(n)
    student = torch.randn(5, n, generator=gen).to(device).requires_grad_()
    teacher = torch.randn(5, n, generator=gen).to(device).requires_grad_()
    lengths = torch.tensor([n, 3, 0, 1, 5], device=device)
    target = torch.tensor([0, 2, 6, 1, 4], device=device)
    ts, tt = (torch.tensor(value, device=device, requires_grad=True) for value in (1.5, 0.7))

    def step():
        kd = kdops.listwise_kd_loss(student, teacher, 1.0, ts, tt, lengths, reduction=reduction)
        pld = kdops.pld_loss(student, teacher, target, tt, reduction=reduction)
        (kd.sum() + pld.sum()).backward()

    with no_sync_on_gpu(_backend(request)):
        assert host_reads(step) == []
    assert all(t.grad is not None and t.grad.isfinite() for t in (ts, tt))


def test_the_profiler_sees_reads_made_inside_an_op():
    """The checks above can fail: a host read made inside an op's C++ code (ATen's
    repeat_interleave reads the total repeat count for its output's shape) is recorded beneath
    the op's own event, and only reads under a device-side assert are set aside."""
    x, repeats = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1, 2, 0])
    reads = host_reads(lambda: torch.repeat_interleave(x, repeats))
    assert any(r.startswith("aten::item <- aten::repeat_interleave") for r in reads), reads
    assert host_reads(lambda: torch._assert_async(x.sum() > 0)) == []


# Host code of the CUDA kernels, their autograd and the checks both backends share: no copy of
# device memory to the host, no wait for the device.
_NO_HOST_COPY = re.compile(r"\.cpu\(\)|kCPU|cudaMemcpy(?!Async\([^;]*DeviceToDevice)|cudaStreamSynchronize|cudaDeviceSynchronize|\.tolist\(")
_SOURCES = ["csrc/cuda", "csrc/autograd", "csrc/common"]


def test_cuda_host_code_copies_nothing_to_the_host():
    root = pathlib.Path(__file__).resolve().parents[1]
    found = []
    for folder in _SOURCES:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in {".cu", ".cuh", ".h", ".cpp"}:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("//", 1)[0]
                if _NO_HOST_COPY.search(code):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert found == []
