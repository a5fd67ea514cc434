"""Shared test helpers: the backends and dtypes every op is tested on, per-dtype tolerances
derived from the dtype's epsilon, and comparison against the float64 reference.

Backends: ``cpu`` (the CPU kernels), ``sim`` (the CUDA kernels run on CPU tensors by the CUDA
simulator, torch.ops.kdops_sim; present when kdops._C_sim was built, as in `make test`) and
``cuda`` (the CUDA kernels on a GPU; skipped without one). A test takes the backend through the
``device`` fixture (tests/conftest.py), which yields the torch device of its tensors and, for
``sim``, routes the public API (kdops.maxsim, ...) to torch.ops.kdops_sim while the test runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

import kdops.functional
from kdops.ops import built_with_simulator

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HALF_DTYPES = [torch.float16, torch.bfloat16]

BACKENDS = ["cpu"] + (["sim"] if built_with_simulator() else []) + ["cuda"]
_NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

def _params(backends: list[str]) -> list:
    return [pytest.param(b, marks=_NO_GPU) if b == "cuda" else b for b in backends]


# Every op test runs once per backend: `@devices` above a test taking `device`.
devices = pytest.mark.parametrize("device", _params(BACKENDS), indirect=True)
# The backends that run the CUDA kernels (simulated or on a GPU).
cuda_kernel_devices = pytest.mark.parametrize("device", _params([b for b in BACKENDS if b != "cpu"]), indirect=True)
# The backends that can run here (for tests that pick one inside).
DEVICES = [b for b in BACKENDS if b != "cuda" or torch.cuda.is_available()]


@contextlib.contextmanager
def simulated() -> Iterator[None]:
    """Routes kdops' public API to torch.ops.kdops_sim (the CUDA kernels on the simulator)."""
    previous = kdops.functional._ops
    kdops.functional._ops = torch.ops.kdops_sim
    try:
        yield
    finally:
        kdops.functional._ops = previous


@contextlib.contextmanager
def on_backend(backend: str) -> Iterator[str]:
    """Runs the body on `backend` ("cpu", "sim", "cuda"); yields the torch device of its tensors."""
    if backend == "sim":
        with simulated():
            yield "cpu"
    else:
        yield backend


def ops():
    """The op namespace the public API calls now: torch.ops.kdops, or torch.ops.kdops_sim inside
    simulated() (for tests that call the ops directly)."""
    return kdops.functional._ops


def on_simulator() -> bool:
    """Whether the public API runs the simulated CUDA kernels now (inside simulated())."""
    return ops() is getattr(torch.ops, "kdops_sim", None)


def raises_value_check(device: str, match: str, error: type[Exception] = ValueError):
    """What a check of argument *values* (mask entries, lengths, targets, offsets) raises: on the
    CPU kernels `error`, naming the argument; on the CUDA kernels the check is a device-side
    assert (no host read, so no sync): the simulator raises it at once as a RuntimeError with
    the same message, while on a GPU it ends the CUDA context, so the test cannot go on there."""
    if device == "cuda":
        pytest.skip("a device-side assert ends the CUDA context")
    return pytest.raises(RuntimeError if on_simulator() else error, match=match)


dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).removeprefix("torch."))


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """rtol/atol for comparing a `dtype` computation with the float64 reference: a few ulps of
    the dtype (half inputs are rounded once on the way in and once on the way out; sums
    accumulate in float32)."""
    eps = torch.finfo(dtype).eps
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-10}
    if dtype == torch.float32:
        return {"rtol": 64 * eps, "atol": 64 * eps}
    return {"rtol": 4 * eps, "atol": 4 * eps}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    """Compare with the reference computed in float64. `scale` is the typical magnitude of the
    quantity (atol is relative to it, not to 1). The reference is first rounded to `dtype`, the
    best any `dtype` result can be (so an overflow to inf is expected as inf), and the smallest
    subnormal step of `dtype` is added since a result that small cannot be stored any closer."""
    tol = tolerance(dtype)
    info = torch.finfo(dtype)
    torch.testing.assert_close(
        actual.double().cpu(),
        expected.to(dtype).double().cpu(),
        rtol=tol["rtol"],
        atol=tol["atol"] * scale + info.smallest_normal * info.eps,
    )


def leaf(t: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
    return t.detach().clone().requires_grad_(requires_grad)


def as_reference(t: torch.Tensor | None) -> torch.Tensor | None:
    """A float64 CPU leaf copy of a floating tensor (other tensors are moved to the CPU as is)."""
    if t is None:
        return None
    if t.is_floating_point():
        return t.detach().double().cpu().requires_grad_(t.requires_grad)
    return t.cpu()


def assert_compiled_matches_eager(step, args: list) -> None:
    """torch.compile(step, fullgraph=True) gives eager's value and gradients (no graph break:
    fullgraph raises on one). `step` returns a scalar; float args that require grad get them."""
    torch._dynamo.reset()
    out = torch.compile(step, fullgraph=True)(*args)
    out.backward()
    eager_args = [leaf(a, a.requires_grad) if a.is_floating_point() else a for a in args]
    expected = step(*eager_args)
    expected.backward()
    torch.testing.assert_close(out, expected)
    for a, e in zip(args, eager_args):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, e.grad)


@contextlib.contextmanager
def sim_schedule(threads: str, seed: int) -> Iterator[None]:
    """Runs the simulated kernels under the thread schedule `threads` ("random", "run_ahead",
    "round_robin", "pct") seeded by `seed`, with the block order shuffled too; in order after."""
    from kdops import _C_sim

    _C_sim.set_schedule(seed, threads, True)
    try:
        yield
    finally:
        _C_sim.set_schedule(0, "in_order", False)
