"""The argument checks of the fake (meta) kernels in kdops.ops: the C++ checks
(csrc/common/*_inputs.h) that need no tensor values, with the same messages naming the
argument. They run where the C++ ones cannot: under torch.compile (fake tensors), so a shape
mismatch fails at compile time naming the argument instead of as a generic error; and in eager
for meta tensors, which dispatch to the fake kernel even when only one argument is on meta (a
meta mask beside CPU scores), so the device check here is what refuses that call."""

from __future__ import annotations

import torch
from torch import Tensor


def reduction(value: str) -> None:
    torch._check_value(value in ("mean", "sum", "none"),
                       lambda: f"reduction must be 'mean', 'sum' or 'none', got {value!r}")


def dim(t: Tensor, n: int, name: str, shape: str) -> None:
    torch._check_value(t.dim() == n, lambda: f"{name} must be {shape}, got a tensor of shape {list(t.shape)}")


# The score dtypes of csrc/common/checks.h's check_floating (not is_floating_point: float8).
FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def floating(t: Tensor, name: str) -> None:
    torch._check_type(t.dtype in FLOATING,
                      lambda: f"{name} must be a floating-point tensor (float32, float64, float16 or bfloat16), got {t.dtype}")


def shape(t: Tensor | None, expected, name: str, what: str) -> None:
    """t (when given) has the shape `expected`, described as `what` in the message."""
    if t is not None:
        torch._check_value(tuple(t.shape) == tuple(expected),
                           lambda: f"{name} must be {what} = {list(expected)}, got {list(t.shape)}")


def like(t: Tensor | None, ref: Tensor, name: str, ref_name: str) -> None:
    """t (when given) has the shape, dtype and device of ref."""
    if t is None:
        return
    shape(t, ref.shape, name, f"the shape of {ref_name}")
    torch._check_type(t.dtype == ref.dtype, lambda: f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    device(ref, ref_name, **{name: t})


def device(ref: Tensor, ref_name: str, **tensors: Tensor | None) -> None:
    """Every given tensor is on ref's device."""
    for name, t in tensors.items():
        if t is not None:
            torch._check_value(t.device == ref.device,
                               lambda: f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def dtype(t: Tensor | None, expected: torch.dtype, name: str) -> None:
    if t is not None:
        torch._check_type(t.dtype == expected, lambda: f"{name} must be {expected}, got {t.dtype}")


def integer(t: Tensor | None, name: str) -> None:
    if t is not None:
        torch._check_type(not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool,
                          lambda: f"{name} must be an integer tensor, got {t.dtype}")


def mask(t: Tensor | None, name: str) -> None:
    if t is not None:
        torch._check_type(not t.dtype.is_complex, lambda: f"{name} must be bool or real, got {t.dtype}")


def positive(value: float, name: str) -> None:
    torch._check_value(value > 0 and value != float("inf"),
                       lambda: f"{name} must be a positive finite number, got {value}")


def temperature_tensor(t: Tensor, scores: Tensor, name: str) -> None:
    """A temperature given as a tensor (csrc/tensor_temperature.cpp): 0-dim, floating, on the CPU
    or the scores' device. Its value is read by the kernel, as positive() checks a float's."""
    torch._check_value(t.dim() == 0, lambda: f"{name} must be a float or a 0-dim tensor (one temperature for every row), got shape {list(t.shape)}")
    torch._check_type(t.dtype.is_floating_point, lambda: f"{name} must be a floating-point tensor, got {t.dtype}")
    torch._check_value(t.device.type == "cpu" or t.device == scores.device,
                       lambda: f"{name} must be on the CPU or on the device of the scores ({scores.device}), got {t.device}")


def row_loss_grad(grad: Tensor, scores: Tensor, reduced: bool) -> None:
    """The upstream gradient of a per-row loss: a scalar for 'mean'/'sum', else [B]."""
    torch._check_type(grad.dtype == scores.dtype, lambda: f"grad must have the dtype of the scores ({scores.dtype}), got {grad.dtype}")
    device(scores, "the scores", grad=grad)
    expected = () if reduced else (scores.shape[0],)
    torch._check_value(tuple(grad.shape) == expected,
                       lambda: f"grad must be {'a scalar (shape [])' if reduced else f'[B] = {list(expected)}'}, got shape {list(grad.shape)}")
