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


# --- MaxSim (ColBERT late interaction) --------------------------------------------------------

__all__ += ["maxsim", "maxsim_packed"]


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def maxsim(
    Q: Tensor,
    D: Tensor,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """ColBERT MaxSim (Khattab & Zaharia 2020): ``score(q, k) = sum_i max_j <Q[q, i], D_k[j]>``
    over the valid query tokens i and valid doc tokens j.

    - ``D[Nd, Ld, d]``: all pairs (in-batch negatives, one query against many docs) -> ``[Nq, Nd]``.
    - ``D[Nq, K, Ld, d]``: each query against its own K candidates -> ``[Nq, K]``.

    ``Q`` is ``[Nq, Lq, d]``. ``q_mask [Nq, Lq]`` and ``d_mask`` (``D.shape[:-1]``) are bool or
    0/1, True = real token: a masked query token adds 0, a masked doc token never wins a max, and
    a doc with no valid token adds 0 for every query token. ``length_normalize=True`` divides
    each score by the query's number of valid tokens (MeanMaxSim; 0 valid tokens gives 0).

    Scores are float32 for fp16/bf16 inputs (accumulated in float32), the input dtype otherwise.
    Gradients flow to Q and D through the first maximal doc token of each query token; the
    ``Nq x Nd x Lq x Ld`` similarity tensor is never materialised.
    """
    check_tensor(Q, "Q")
    check_tensor(D, "D")
    for mask, name in ((q_mask, "q_mask"), (d_mask, "d_mask")):
        if mask is not None:
            check_tensor(mask, name)
    _check_flag(length_normalize, "length_normalize")
    check_backend(Q, "kdops.maxsim")
    return torch.ops.kdops.maxsim.default(Q, D, q_mask, d_mask, None, length_normalize)[0]


def maxsim_packed(
    Q: Tensor,
    D_tokens: Tensor,
    doc_offsets: Tensor,
    q_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """MaxSim of every query against variable-length docs stored without padding -> ``[Nq, Nd]``.

    ``D_tokens[T, d]`` holds the docs' tokens back to back; doc k is
    ``D_tokens[doc_offsets[k]:doc_offsets[k + 1]]``, with ``doc_offsets`` int64 ``[Nd + 1]``,
    non-decreasing, from 0 to T (an empty doc scores 0). Otherwise as :func:`maxsim`.
    """
    check_tensor(Q, "Q")
    check_tensor(D_tokens, "D_tokens")
    check_tensor(doc_offsets, "doc_offsets")
    if q_mask is not None:
        check_tensor(q_mask, "q_mask")
    _check_flag(length_normalize, "length_normalize")
    check_backend(Q, "kdops.maxsim_packed")
    return torch.ops.kdops.maxsim.default(Q, D_tokens, q_mask, None, doc_offsets, length_normalize)[0]
