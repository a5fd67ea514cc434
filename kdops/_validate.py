"""Checks the Python API makes before calling an op: the things the C++ schema cannot say
(argument count, Python types, enum strings) and a build that lacks the kernel for a device.
Shape, dtype and device checks live once, in the C++ kernels' TORCH_CHECKs, and in the fake
kernels for torch.compile."""

from __future__ import annotations

from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")

_REBUILD = (
    "kdops was built without CUDA kernels, so {op} cannot run on {device}. Rebuild it with a "
    "CUDA build of torch and the CUDA toolkit: "
    "CUDA_HOME=/usr/local/cuda KDOPS_CUDA=1 pip install --no-build-isolation --force-reinstall ."
)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_backend(tensor: Tensor, op: str) -> None:
    """An actionable error, instead of the dispatcher's, for CUDA tensors in a CPU-only build.
    ``is_cuda``, not ``device.type``: the latter builds a torch.device per call (0.4 us, a tenth of
    a small op's Python cost)."""
    if tensor.is_cuda:
        from kdops.ops import built_with_cuda

        if not built_with_cuda():
            raise RuntimeError(_REBUILD.format(op=op, device=tensor.device))


def check_positive(value: float, name: str) -> float:
    """A temperature: a real number in (0, inf). A bool is refused, not read as 1.0 (as top_k)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive finite number (int or float), got {type(value).__name__} {value!r}")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_temperature(value: float | Tensor, name: str) -> float | Tensor:
    """A temperature: a positive finite number, or a 0-dim floating-point tensor, which may
    require grad (a learned temperature). A tensor's value is checked by the op that reads it (a
    read here would be one more device sync)."""
    if not isinstance(value, Tensor):
        return check_positive(value, name)
    if value.dim() != 0:
        raise ValueError(
            f"{name} must be a float or a 0-dim tensor (one temperature for every row), got shape {list(value.shape)}"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    return value
