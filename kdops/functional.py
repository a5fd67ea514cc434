"""The public functional API: each function checks what the schema cannot, then calls its
torch.ops.kdops op (whose kernels, fake kernel and autograd are registered in kdops.ops).
The formulas are spelled out in kdops.reference."""

from __future__ import annotations

from typing import overload

import torch
from torch import Tensor

from kdops import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from kdops._validate import check_backend, check_reduction, check_tensor

__all__ = ["margin_mse"]


# --- Margin-MSE -------------------------------------------------------------------------------


@overload
def margin_mse(
    student_pos: Tensor, student_neg: Tensor, teacher_pos: Tensor, teacher_neg: Tensor, *,
    reduction: str = "mean",
) -> Tensor: ...


@overload
def margin_mse(
    student: Tensor, teacher: Tensor, *, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor: ...


def margin_mse(*scores: Tensor, mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Margin-MSE (Hofstaetter et al. 2020): match the student's score margins to the teacher's.

    Pairwise form, four [B] tensors::

        margin_mse(student_pos, student_neg, teacher_pos, teacher_neg)
        loss_b = ((sp_b - sn_b) - (tp_b - tn_b))^2

    Multi-negative form, [B, 1+N] scores with column 0 the positive::

        margin_mse(student, teacher, mask=None)
        loss_bj = ((s_b0 - s_bj) - (t_b0 - t_bj))^2,  j = 1..N

    ``mask`` (bool or 0/1, [B, 1+N], True = present) drops missing negatives; a row whose
    positive is masked adds nothing. ``reduction``: 'mean' (over the counted terms; 0 if none),
    'sum', or 'none' ([B] pairwise, [B, N] multi-negative; masked terms are 0).

    Half inputs accumulate in float32; the loss has the input dtype. Gradients flow to every
    input that requires grad (the teacher's are the negatives of the student's).
    """
    check_reduction(reduction)
    if len(scores) == 4:
        if mask is not None:
            raise ValueError("mask is only accepted by the multi-negative form margin_mse(student, teacher)")
        names = ("student_pos", "student_neg", "teacher_pos", "teacher_neg")
        for value, name in zip(scores, names):
            check_tensor(value, name)
        check_backend(scores[0], "kdops.margin_mse")
        return torch.ops.kdops.margin_mse_pairwise.default(*scores, reduction)
    if len(scores) == 2:
        student = check_tensor(scores[0], "student")
        teacher = check_tensor(scores[1], "teacher")
        if mask is not None:
            check_tensor(mask, "mask")
        check_backend(student, "kdops.margin_mse")
        return torch.ops.kdops.margin_mse.default(student, teacher, mask, reduction)[0]
    raise TypeError(
        "margin_mse takes (student_pos, student_neg, teacher_pos, teacher_neg) or "
        f"(student, teacher), got {len(scores)} positional arguments"
    )
