"""Plain PyTorch implementations of every kdops op: the readable spec.

Tests compare the fused kernels against these functions (usually on float64 copies of the
inputs), and the benchmarks time them eagerly and under ``torch.compile``. They are written
for clarity, the way a user would write them by hand, not for speed or memory.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _reduce(loss: Tensor, reduction: str, count: Tensor | int | None = None) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if count is None:
        return loss.mean()
    return loss.sum() / torch.clamp(torch.as_tensor(count, device=loss.device), min=1)


# --- Margin-MSE (Hofstaetter et al. 2020) ----------------------------------------------------


def margin_mse(*scores: Tensor, mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Margin-MSE. ``margin_mse(sp, sn, tp, tn)`` with [B] scores: ((sp-sn)-(tp-tn))^2 per row;
    or ``margin_mse(student, teacher, mask=None)`` with [B, 1+N] scores, column 0 the positive:
    ((s0-sj)-(t0-tj))^2 per negative j. A term counts when mask[b, 0] and mask[b, j] are True;
    'mean' averages over counted terms (0 when there are none)."""
    if len(scores) == 4:
        student_pos, student_neg, teacher_pos, teacher_neg = scores
        loss = ((student_pos - student_neg) - (teacher_pos - teacher_neg)) ** 2
        return _reduce(loss, reduction)
    student, teacher = scores
    student_margin = student[:, :1] - student[:, 1:]
    teacher_margin = teacher[:, :1] - teacher[:, 1:]
    loss = (student_margin - teacher_margin) ** 2
    if mask is None:
        return _reduce(loss, reduction)
    valid = mask[:, :1].bool() & mask[:, 1:].bool()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return _reduce(loss, reduction, valid.sum())
