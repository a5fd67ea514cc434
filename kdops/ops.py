"""Loads kdops._C (which defines torch.ops.kdops.*) and registers, for each op, the fake kernel
used by torch.compile and the autograd formula. The backward of every op is an op of its own
(``<op>_backward``), so compiled graphs keep it fused too; double backward is not supported
and says so."""

from __future__ import annotations

import torch

from kdops import _C

__all__ = ["build_info", "built_with_cuda"]

_BACKENDS = ("CPU", "CUDA")


def built_with_cuda() -> bool:
    """Whether kdops._C holds CUDA kernels (decided at build time, not by a visible GPU)."""
    return bool(_C.build_info()["cuda"])


def _op_backends(op: str) -> list[str]:
    return [key for key in _BACKENDS if torch._C._dispatch_has_kernel_for_dispatch_key(op, key)]


def build_info() -> dict:
    """How kdops was built and what it can run: torch and CUDA versions, whether CUDA kernels
    were compiled and for which archs, and the backends with a kernel for every kdops op."""
    build = _C.build_info()
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("kdops::"))
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels": bool(build["cuda"]),
        "cuda_archs": str(build["cuda_archs"]),
        "cuda_available": torch.cuda.is_available(),
        "ops": {name.removeprefix("kdops::"): _op_backends(name) for name in names},
    }


def _needs(ctx, *index: int) -> bool:
    return any(ctx.needs_input_grad[i] for i in index)


def _no_double_backward(op: str) -> None:
    def backward(ctx, *grads):
        raise RuntimeError(f"kdops::{op} is a backward op: double backward is not supported")

    torch.library.register_autograd(f"kdops::{op}", backward)


# --- Margin-MSE -------------------------------------------------------------------------------


def _check_reduction(reduction: str) -> None:
    torch._check(reduction in ("mean", "sum", "none"), lambda: f"invalid reduction {reduction!r}")


@torch.library.register_fake("kdops::margin_mse")
def _(student, teacher, mask, reduction):
    torch._check(student.dim() == 2 and student.shape[1] >= 2, lambda: "student must be [B, 1+N]")
    torch._check(teacher.shape == student.shape, lambda: "teacher must have the shape of student")
    torch._check(teacher.dtype == student.dtype, lambda: "teacher must have the dtype of student")
    torch._check(mask is None or mask.shape == student.shape, lambda: "mask must have the shape of student")
    _check_reduction(reduction)
    b, n = student.shape[0], student.shape[1] - 1
    loss = student.new_empty((b, n) if reduction == "none" else ())
    return loss, student.new_empty((), dtype=torch.int64)


@torch.library.register_fake("kdops::margin_mse_backward")
def _(grad, student, teacher, mask, count, reduction):
    return torch.empty_like(student, memory_format=torch.contiguous_format)


def _margin_mse_setup(ctx, inputs, output):
    student, teacher, mask, reduction = inputs
    ctx.reduction = reduction
    ctx.mark_non_differentiable(output[1])
    if _needs(ctx, 0, 1):
        ctx.save_for_backward(student, teacher, mask, output[1])


def _margin_mse_backward(ctx, grad_loss, _grad_count):
    student, teacher, mask, count = ctx.saved_tensors
    grad_student = torch.ops.kdops.margin_mse_backward.default(
        grad_loss, student, teacher, mask, count, ctx.reduction
    )
    return (
        grad_student if ctx.needs_input_grad[0] else None,
        -grad_student if ctx.needs_input_grad[1] else None,
        None,
        None,
    )


torch.library.register_autograd(
    "kdops::margin_mse", _margin_mse_backward, setup_context=_margin_mse_setup
)
_no_double_backward("margin_mse_backward")


@torch.library.register_fake("kdops::margin_mse_pairwise")
def _(student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    torch._check(student_pos.dim() == 1, lambda: "student_pos must be [B]")
    for t in (student_neg, teacher_pos, teacher_neg):
        torch._check(t.shape == student_pos.shape, lambda: "all four scores must be [B]")
        torch._check(t.dtype == student_pos.dtype, lambda: "all four scores must share a dtype")
    _check_reduction(reduction)
    return student_pos.new_empty(student_pos.shape if reduction == "none" else ())


@torch.library.register_fake("kdops::margin_mse_pairwise_backward")
def _(grad, student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    return torch.empty_like(student_pos), torch.empty_like(student_neg)


def _margin_mse_pairwise_setup(ctx, inputs, output):
    *scores, reduction = inputs
    ctx.reduction = reduction
    if _needs(ctx, 0, 1, 2, 3):
        ctx.save_for_backward(*scores)


def _margin_mse_pairwise_backward(ctx, grad):
    grad_pos, grad_neg = torch.ops.kdops.margin_mse_pairwise_backward.default(
        grad, *ctx.saved_tensors, ctx.reduction
    )
    needs = ctx.needs_input_grad
    return (
        grad_pos if needs[0] else None,
        grad_neg if needs[1] else None,
        -grad_pos if needs[2] else None,
        -grad_neg if needs[3] else None,
        None,
    )


torch.library.register_autograd(
    "kdops::margin_mse_pairwise", _margin_mse_pairwise_backward, setup_context=_margin_mse_pairwise_setup
)
_no_double_backward("margin_mse_pairwise_backward")
