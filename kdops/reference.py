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


# --- MaxSim (ColBERT, Khattab & Zaharia 2020) -------------------------------------------------


def maxsim(
    Q: Tensor,
    D: Tensor,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """score(q, k) = sum_i max_j <Q[q, i], D_k[j]>, by einsum over the full similarity tensor.

    D is [Nd, Ld, d] (all pairs -> [Nq, Nd]) or [Nq, K, Ld, d] (per query -> [Nq, K]). Masked doc
    tokens are set to -inf before the max (so they never win); a doc with no valid token adds 0;
    masked query tokens add 0. length_normalize divides by the query's valid token count (at
    least 1). Scores are float32 for half inputs."""
    if D.dim() == 3:
        sim = torch.einsum("qid,njd->qnij", Q, D)  # [Nq, Nd, Lq, Ld]
        doc_valid = None if d_mask is None else d_mask.bool()[None, :, None, :]
    else:
        sim = torch.einsum("qid,qnjd->qnij", Q, D)  # [Nq, K, Lq, Ld]
        doc_valid = None if d_mask is None else d_mask.bool()[:, :, None, :]
    if Q.dtype in (torch.float16, torch.bfloat16):
        sim = sim.float()
    if sim.shape[-1] == 0:  # docs without tokens: every max is empty and adds 0 (an empty sum)
        best = sim.sum(dim=-1)
    elif doc_valid is None:
        best = sim.max(dim=-1).values
    else:
        best = sim.masked_fill(~doc_valid, float("-inf")).max(dim=-1).values
        best = torch.where(doc_valid.any(dim=-1), best, torch.zeros_like(best))
    if q_mask is not None:
        best = torch.where(q_mask.bool()[:, None, :], best, torch.zeros_like(best))
    scores = best.sum(dim=-1)
    if length_normalize:
        lengths = Q.shape[1] if q_mask is None else q_mask.bool().sum(dim=1, keepdim=True)
        scores = scores / torch.clamp(torch.as_tensor(lengths, device=scores.device), min=1)
    return scores


def pad_packed(D_tokens: Tensor, doc_offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Packed docs (D_tokens[T, d], doc k = rows doc_offsets[k]..doc_offsets[k+1]) as padded
    D[Nd, Lmax, d] and its d_mask[Nd, Lmax]."""
    lengths = (doc_offsets[1:] - doc_offsets[:-1]).tolist()
    longest = max(lengths, default=0)
    D = D_tokens.new_zeros((len(lengths), longest, D_tokens.shape[1]))
    d_mask = torch.zeros((len(lengths), longest), dtype=torch.bool, device=D_tokens.device)
    for k, (start, length) in enumerate(zip(doc_offsets[:-1].tolist(), lengths)):
        D[k, :length] = D_tokens[start : start + length]
        d_mask[k, :length] = True
    return D, d_mask


def maxsim_packed(
    Q: Tensor,
    D_tokens: Tensor,
    doc_offsets: Tensor,
    q_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """MaxSim against packed variable-length docs: pad them, then :func:`maxsim` (all pairs)."""
    D, d_mask = pad_packed(D_tokens, doc_offsets)
    return maxsim(Q, D, q_mask, d_mask, length_normalize=length_normalize)
# --- MaxSim for serving: quantized and residual-compressed docs (inference only) -------------


def dequantize(x: Tensor, scale: Tensor) -> Tensor:
    """int8 / float8_e4m3fn tokens [..., d] with a scale per token [...] as float32 ``x * scale``."""
    return x.float() * scale[..., None]


def maxsim_quantized(
    Q: Tensor,
    D: Tensor,
    q_scale: Tensor | None = None,
    d_scale: Tensor | None = None,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """MaxSim of quantized tokens, float32 scores. D is int8 or float8_e4m3fn with a scale per
    token; Q float32, or int8 / float8_e4m3fn with q_scale.

    int8 Q and D: the dot products are exact integers (int32 accumulation), and
    ``score = sum_i q_scale[i] * max_j float32(<Q_i, D_j>) * d_scale[j]``. Any other pair:
    :func:`maxsim` (float32) of the decoded tokens ``x * scale``."""
    if Q.dtype == torch.int8 and D.dtype == torch.int8:
        equation = "qid,njd->qnij" if D.dim() == 3 else "qid,qnjd->qnij"
        dots = torch.einsum(equation, Q.long(), D.long())  # exact integers
        doc_scale = d_scale[None, :, None, :] if D.dim() == 3 else d_scale[:, :, None, :]
        sim = dots.float() * doc_scale  # [Nq, K, Lq, Ld]
        if d_mask is not None:
            doc_valid = d_mask.bool()[None, :, None, :] if D.dim() == 3 else d_mask.bool()[:, :, None, :]
            sim = sim.masked_fill(~doc_valid, float("-inf"))
        if sim.shape[-1] == 0:  # docs without tokens: every max is empty and adds 0
            best = sim.sum(dim=-1)
        else:
            best = sim.max(dim=-1).values
            best = torch.where(best == float("-inf"), torch.zeros_like(best), best)  # no valid doc token: 0
        best = best * q_scale[:, None, :]
        if q_mask is not None:
            best = torch.where(q_mask.bool()[:, None, :], best, torch.zeros_like(best))
        scores = best.sum(dim=-1)
        if length_normalize:
            lengths = Q.shape[1] if q_mask is None else q_mask.bool().sum(dim=1, keepdim=True)
            scores = scores / torch.clamp(torch.as_tensor(lengths), min=1)
        return scores
    query = Q if Q.dtype == torch.float32 else dequantize(Q, q_scale)
    return maxsim(query, dequantize(D, d_scale), q_mask, d_mask, length_normalize=length_normalize)


def residual_decompress(codes: Tensor, residuals: Tensor, centroids: Tensor, bucket_weights: Tensor) -> Tensor:
    """ColBERT/PLAID residual-compressed tokens as float32 vectors [..., d], as ColBERT's
    ResidualCodec.decompress makes them: ``normalize(centroids[code] + bucket_weights[b])``.

    ``residuals [..., d * nbits / 8]`` uint8 holds bucket index b_e of each dimension e in stream
    bits ``e * nbits + k`` (k = 0 its least significant bit), 8 stream bits per byte, the first in
    the byte's most significant bit (``numpy.packbits``)."""
    dim = centroids.shape[1]
    nbits = residuals.shape[-1] * 8 // dim
    shifts = torch.arange(7, -1, -1, device=residuals.device)
    stream = (residuals.long()[..., None] >> shifts) & 1  # [..., bytes, 8], most significant first
    bits = stream.flatten(-2).unflatten(-1, (dim, nbits))  # [..., d, nbits]
    buckets = (bits << torch.arange(nbits, device=bits.device)).sum(-1)
    x = centroids[codes.long()] + bucket_weights[buckets]
    return torch.nn.functional.normalize(x, p=2, dim=-1)


def maxsim_residual(
    Q: Tensor,
    codes: Tensor,
    residuals: Tensor,
    centroids: Tensor,
    bucket_weights: Tensor,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """:func:`maxsim` of Q against residual-compressed docs (codes ``[Nd, Ld]`` or
    ``[Nq, K, Ld]``), decoded by :func:`residual_decompress`."""
    D = residual_decompress(codes, residuals, centroids, bucket_weights)
    return maxsim(Q, D, q_mask, d_mask, length_normalize=length_normalize)


# --- Plackett-Luce family (listwise) ----------------------------------------------------------


def _valid_columns(scores: Tensor, lengths: Tensor | None) -> Tensor:
    """[B, n] bool: column j of row b is a real item (j < lengths[b])."""
    columns = torch.arange(scores.shape[1], device=scores.device)
    if lengths is None:
        return columns.expand(scores.shape).ge(0)
    return columns < lengths.to(scores.device)[:, None]


def plackett_luce_loss(
    scores: Tensor,
    ranking: Tensor,
    weights: Tensor | None = None,
    lengths: Tensor | None = None,
    top_k: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Plackett-Luce negative log-likelihood of a ranking ``pi`` (best first) per row::

        loss_b = sum_{k < min(top_k, len_b)} w_k * (logsumexp_{k <= j < len_b} s[pi_j] - s[pi_k])

    Columns at or past ``lengths[b]`` are padding (and ``ranking[b, len_b:]`` is ignored);
    'mean' averages over the B rows (a row of length 0 adds 0)."""
    batch, n = scores.shape
    valid = _valid_columns(scores, lengths)  # position k < len_b <=> column k < len_b
    positions = torch.arange(n, device=scores.device)
    pi = torch.where(valid, ranking, positions.expand(batch, n))
    ranked = scores.gather(1, pi)
    # Padding takes the dtype's lowest finite value: exp of it adds exactly 0 next to any real
    # score, and unlike -inf it keeps the gradients finite.
    ranked = torch.where(valid, ranked, torch.finfo(scores.dtype).min)
    suffix_lse = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)
    terms = suffix_lse - ranked
    # A term whose remaining valid items are all -inf is -inf - (-inf) = NaN: there is nothing to
    # pick from (the padding's lowest value must not stand in for a probability).
    suffix_max = torch.where(valid, ranked, float("-inf")).flip(1).cummax(dim=1).values.flip(1)
    terms = torch.where(valid & (suffix_max == float("-inf")), float("nan"), terms)
    if weights is not None:
        terms = terms * weights
    counted = valid if top_k is None else valid & (positions < top_k)
    loss = torch.where(counted, terms, torch.zeros_like(terms)).sum(1)
    return _reduce(loss, reduction)


def listmle(
    scores: Tensor,
    relevance: Tensor,
    lengths: Tensor | None = None,
    top_k: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """ListMLE (Xia et al. 2008): the Plackett-Luce loss of the ranking by descending relevance
    (ties: lower index first; NaN relevance ranks first, as torch.sort puts it)."""
    valid = _valid_columns(scores, lengths)
    # Padding goes last: at -inf it ties only with -inf items, which have lower indices.
    key = torch.where(valid, relevance.to(scores.dtype), float("-inf"))
    ranking = torch.sort(key, dim=1, descending=True, stable=True).indices
    return plackett_luce_loss(scores, ranking, lengths=lengths, top_k=top_k, reduction=reduction)


def _tempered(x: Tensor, temperature: float | Tensor, valid: Tensor | None = None) -> Tensor:
    """(x - max) / T per row: the logits of softmax(x / T), shifted by the row's max (over its
    valid items) before the division, so that no x / T is formed that overflows on finite inputs
    (x = 1e9 at T = 1e-30: the max items give exactly 0, the others -inf, the hard max). The max
    is detached: a softmax does not depend on its shift. A row whose max is not finite has no
    softmax: NaN; a row of no valid item is shifted by 0 (it has no softmax to take, and a NaN
    there would reach a temperature's gradient through the padding's 0 gradient). Padding (not
    `valid`) takes the dtype's lowest value afterwards (as in plackett_luce_loss: both sides'
    padding then cancels in log p - log q, finite gradients)."""
    if valid is None:
        top = x.amax(dim=1, keepdim=True)
    else:
        top = torch.where(valid, x, float("-inf")).amax(dim=1, keepdim=True)
    top = top.detach()
    empty = torch.zeros_like(top, dtype=torch.bool) if valid is None else ~valid.any(dim=1, keepdim=True)
    top = torch.where(top.isfinite(), top, torch.where(empty, 0.0, float("nan")))
    z = (x - top) / temperature
    return z if valid is None else torch.where(valid, z, torch.finfo(x.dtype).min)


def pld_ranking(teacher_logits: Tensor, target: Tensor) -> Tensor:
    """The teacher-optimal ranking of PLD: the true class first, then the other classes by
    descending teacher logit (ties: lower index first)."""
    batch, classes = teacher_logits.shape
    order = torch.sort(teacher_logits.detach(), dim=1, descending=True, stable=True).indices
    others = order[order != target[:, None]].view(batch, classes - 1)
    return torch.cat([target[:, None], others], dim=1)


def pld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float | Tensor = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Plackett-Luce Distillation: the Plackett-Luce loss of the student's logits on the
    teacher-optimal ranking ``pi`` (:func:`pld_ranking`), position k weighted by the teacher's
    softmax probability (at the temperature) of the class it holds::

        loss_b = sum_k softmax(t_b / T)[pi_k] * (logsumexp_{j >= k} s[pi_j] - s[pi_k])

    A temperature tensor that requires grad gets its gradient by autograd through t / T."""
    ranking = pld_ranking(teacher_logits, target)
    weights = torch.softmax(_tempered(teacher_logits, temperature), dim=1).gather(1, ranking)
    return plackett_luce_loss(student_logits, ranking, weights=weights, reduction=reduction)


def listwise_kd_loss(
    student: Tensor,
    teacher: Tensor,
    temperature: float | Tensor = 1.0,
    student_temperature: float | Tensor | None = None,
    teacher_temperature: float | Tensor | None = None,
    lengths: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Listwise KD (ColBERTv2, PyLate, sentence-transformers' MultiVectorDistillKLDivLoss)::

        loss_b = Ts^2 * KL(softmax(teacher_b / Tt) || softmax(student_b / Ts))

    over the row's valid items; each temperature defaults to ``temperature``. Temperature
    tensors that require grad get their gradients by autograd through the formula."""
    ts = temperature if student_temperature is None else student_temperature
    tt = temperature if teacher_temperature is None else teacher_temperature
    valid = _valid_columns(student, lengths)
    # _tempered shifts each row by its max before dividing by T, padding at the lowest value.
    log_q = torch.log_softmax(_tempered(student, ts, valid), dim=1)
    log_p = torch.log_softmax(_tempered(teacher, tt, valid), dim=1)
    p = log_p.exp()
    # p = 0 adds 0 (the limit of p log p); a NaN p (a NaN or +inf teacher score) propagates.
    terms = torch.where(valid & (p != 0), p * (log_p - log_q), torch.zeros_like(p))
    loss = ts * (ts * terms.sum(1))  # never ts * ts, which overflows where the loss does not
    # A side whose valid items are all -inf (or NaN) has no softmax: the row's loss is NaN.
    no_softmax = [~torch.where(valid, x, float("-inf")).gt(float("-inf")).any(1) for x in (student, teacher)]
    undefined = valid.any(1) & (no_softmax[0] | no_softmax[1])
    return _reduce(torch.where(undefined, float("nan"), loss), reduction)
