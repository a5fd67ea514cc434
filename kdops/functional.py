"""The public functional API: each function checks what the schema cannot, then calls its
torch.ops.kdops op (whose kernels, fake kernel and autograd are registered in kdops.ops).
The formulas are spelled out in kdops.reference."""

from __future__ import annotations

from typing import overload

import torch
from torch import Tensor

from kdops import ops as _registrations  # noqa: F401  (registers fake kernels and autograd)
from kdops._validate import check_backend, check_reduction, check_temperature, check_tensor

# The op namespace every function below calls. Always torch.ops.kdops for users; the test suite
# swaps in torch.ops.kdops_sim (tests/helpers.py) to run the same public API on the CUDA kernels
# executed by the simulator. A module global: no cost on the call path.
_ops = torch.ops.kdops

__all__ = ["listmle", "listwise_kd_loss", "margin_mse", "maxsim", "maxsim_packed", "plackett_luce_loss", "pld_loss"]


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
        return _ops.margin_mse_pairwise.default(*scores, reduction)
    if len(scores) == 2:
        student = check_tensor(scores[0], "student")
        teacher = check_tensor(scores[1], "teacher")
        if mask is not None:
            check_tensor(mask, "mask")
        check_backend(student, "kdops.margin_mse")
        return _ops.margin_mse.default(student, teacher, mask, reduction)[0]
    raise TypeError(
        "margin_mse takes (student_pos, student_neg, teacher_pos, teacher_neg) or "
        f"(student, teacher), got {len(scores)} positional arguments"
    )


# --- MaxSim (ColBERT late interaction) --------------------------------------------------------

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
    # No argmax wanted here (with_argmax=False): the autograd kernel computes it only when it
    # records a backward, so inference writes scores only.
    return _ops.maxsim.default(Q, D, q_mask, d_mask, None, length_normalize, False)[0]


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
    return _ops.maxsim.default(Q, D_tokens, q_mask, None, doc_offsets, length_normalize, False)[0]
# --- Plackett-Luce family (listwise) ----------------------------------------------------------

def _check_optional(value: Tensor | None, name: str) -> None:
    if value is not None:
        check_tensor(value, name)


def _check_top_k(top_k: int | None) -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def plackett_luce_loss(
    scores: Tensor,
    ranking: Tensor,
    weights: Tensor | None = None,
    lengths: Tensor | None = None,
    top_k: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Plackett-Luce negative log-likelihood of a ranking, one fused pass per row.

    ``scores`` [B, n] floating; ``ranking`` [B, n] int64, row b best first, its first
    ``len_b`` entries a permutation of ``0..len_b-1`` (checked; the rest is ignored);
    ``weights`` [B, n] per position (default 1); ``lengths`` [B] integers in [0, n] (default n):
    columns at or past ``len_b`` are padding and take no part; ``top_k``: only the first k
    positions add terms (clipped to the row's length), the denominators still run over the
    whole valid tail::

        loss_b = sum_{k < min(top_k, len_b)} w_bk * (logsumexp_{k <= j < len_b} s[b, pi_j] - s[b, pi_k])

    ``reduction``: 'mean' over the B rows (a row of length 0 adds 0 and still counts), 'sum',
    or 'none' ([B]). Gradients flow to ``scores`` and ``weights``. Half inputs accumulate in
    float32; the loss has the input dtype.
    """
    check_reduction(reduction)
    check_tensor(scores, "scores")
    check_tensor(ranking, "ranking")
    _check_optional(weights, "weights")
    _check_optional(lengths, "lengths")
    _check_top_k(top_k)
    check_backend(scores, "kdops.plackett_luce_loss")
    return _ops.plackett_luce_loss.default(scores, ranking, weights, lengths, top_k, reduction)


def listmle(
    scores: Tensor,
    relevance: Tensor,
    lengths: Tensor | None = None,
    top_k: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """ListMLE (Xia et al. 2008): :func:`plackett_luce_loss` of the ranking by descending
    ``relevance`` ([B, n], any real dtype, compared in the scores' dtype; ties: lower index
    first). The sort is part of the fused op. ``lengths``, ``top_k`` and ``reduction`` as in
    :func:`plackett_luce_loss`. Only ``scores`` gets a gradient (the ranking is piecewise
    constant in the relevance)."""
    check_reduction(reduction)
    check_tensor(scores, "scores")
    check_tensor(relevance, "relevance")
    _check_optional(lengths, "lengths")
    _check_top_k(top_k)
    check_backend(scores, "kdops.listmle")
    return _ops.listmle.default(scores, relevance, lengths, top_k, reduction)[0]


def pld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float | Tensor = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Plackett-Luce Distillation: the PL loss of ``student_logits`` [B, C] on the
    teacher-optimal ranking pi (``target`` [B] first, then the other classes by descending
    ``teacher_logits``, ties to the lower index), position k weighted by the teacher's
    probability of the class it holds::

        loss_b = sum_k softmax(t_b / T)[pi_k] * (logsumexp_{j >= k} s[b, pi_j] - s[b, pi_k])

    The sort is part of the fused op. Gradients flow to the student and, through the weights
    (the ranking being piecewise constant), to the teacher when it requires grad.

    ``temperature``: a positive float, or a 0-dim floating tensor (on the CPU or the logits'
    device) that may require grad, a learned temperature: ``dL/dT = -(1/T) sum_c t_c dL/dt_c``.
    The op reads a tensor's value on the host: free on the CPU, one device sync on a GPU.
    """
    check_reduction(reduction)
    check_tensor(student_logits, "student_logits")
    check_tensor(teacher_logits, "teacher_logits")
    check_tensor(target, "target")
    temperature = check_temperature(temperature, "temperature")
    check_backend(student_logits, "kdops.pld_loss")
    if isinstance(temperature, Tensor):
        return _ops.pld_loss.tensor_temperature(student_logits, teacher_logits, target, temperature, reduction)[0]
    return _ops.pld_loss.default(student_logits, teacher_logits, target, temperature, reduction)[0]


def listwise_kd_loss(
    student: Tensor,
    teacher: Tensor,
    temperature: float | Tensor = 1.0,
    student_temperature: float | Tensor | None = None,
    teacher_temperature: float | Tensor | None = None,
    lengths: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Listwise distillation (ColBERTv2, PyLate, sentence-transformers'
    ``MultiVectorDistillKLDivLoss``, same scaling) over each row's valid items::

        loss_b = Ts^2 * KL(softmax(teacher_b / Tt) || softmax(student_b / Ts))

    ``student``, ``teacher`` [B, n]; each temperature defaults to ``temperature``; ``lengths``
    and ``reduction`` as in :func:`plackett_luce_loss`. Gradients flow to both scores.

    Each temperature is a positive float, or a 0-dim floating tensor (on the CPU or the scores'
    device) that may require grad, a learned temperature: ``dL/dTs = (2 L - sum_i s_i dL/ds_i) / Ts``
    and ``dL/dTt = -(1/Tt) sum_i t_i dL/dt_i`` (a tensor ``temperature`` standing for both sides
    gets their sum). The op reads a tensor's value on the host: free on the CPU, one device sync
    on a GPU.
    """
    check_reduction(reduction)
    check_tensor(student, "student")
    check_tensor(teacher, "teacher")
    _check_optional(lengths, "lengths")
    # Each checked under the name it was given by (a bad `temperature` is named so, not as the
    # side it stands in for).
    temperature = check_temperature(temperature, "temperature")
    ts = temperature if student_temperature is None else check_temperature(student_temperature, "student_temperature")
    tt = temperature if teacher_temperature is None else check_temperature(teacher_temperature, "teacher_temperature")
    check_backend(student, "kdops.listwise_kd_loss")
    if isinstance(ts, Tensor) or isinstance(tt, Tensor):
        # The overload takes both as tensors: a float side as a float64 CPU scalar (exact, no copy
        # to a device).
        ts, tt = (t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64) for t in (ts, tt))
        return _ops.listwise_kd_loss.tensor_temperature(student, teacher, lengths, ts, tt, reduction)
    return _ops.listwise_kd_loss.default(student, teacher, lengths, ts, tt, reduction)
