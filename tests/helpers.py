"""Shared test helpers: the devices and dtypes every op is tested on, per-dtype tolerances
derived from the dtype's epsilon, and comparison against the float64 reference."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HALF_DTYPES = [torch.float16, torch.bfloat16]

devices = pytest.mark.parametrize("device", DEVICES)
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
