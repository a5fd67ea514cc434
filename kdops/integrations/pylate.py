"""ColBERT scoring and listwise distillation with PyLate's argument conventions, backed by
:func:`kdops.maxsim` and :func:`kdops.listwise_kd_loss`. Needs no PyLate install::

    from kdops.integrations import pylate as kd_pylate
    scores = kd_pylate.colbert_kd_scores(queries, documents, queries_mask, documents_mask)
    loss = kd_pylate.distillation_loss(scores, teacher_scores)   # pylate.losses.Distillation's loss

One deliberate difference: PyLate's torch path masks by multiplying similarities by 0, so a
padding token wins the max whenever every real similarity is negative; here a masked document
token never wins, and a document with no valid token scores 0. Where every real token has a
non-negative best similarity (e.g. most normalised ColBERT embeddings) the two agree exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

import kdops

__all__ = ["colbert_kd_scores", "colbert_scores", "colbert_scores_pairwise", "distillation_loss", "min_max_normalize"]


def colbert_scores(
    queries_embeddings: Tensor,
    documents_embeddings: Tensor,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
) -> Tensor:
    """All pairs: queries [Nq, Lq, d] x documents [Nd, Ld, d] -> [Nq, Nd] (PyLate's ``colbert_scores``)."""
    return kdops.maxsim(queries_embeddings, documents_embeddings, q_mask=queries_mask, d_mask=documents_mask)


def colbert_kd_scores(
    queries_embeddings: Tensor,
    documents_embeddings: Tensor,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
) -> Tensor:
    """Each query against its candidates: [B, Lq, d] x [B, K, Ld, d] -> [B, K] (PyLate's
    ``colbert_kd_scores``; kdops.maxsim picks the layout from D's rank)."""
    return colbert_scores(queries_embeddings, documents_embeddings, queries_mask, documents_mask)


def colbert_scores_pairwise(queries_embeddings: Tensor, documents_embeddings: Tensor) -> Tensor:
    """Matched pairs: [B, Lq, d] and [B, Ld, d] -> [B] (PyLate's ``colbert_scores_pairwise``)."""
    return kdops.maxsim(queries_embeddings, documents_embeddings.unsqueeze(1)).squeeze(1)


def min_max_normalize(scores: Tensor, epsilon: float = 1e-8) -> Tensor:
    """Per-row (s - min) / (max - min + epsilon), PyLate's ``normalize_scores``."""
    low, high = scores.min(dim=1, keepdim=True).values, scores.max(dim=1, keepdim=True).values
    return (scores - low) / (high - low + epsilon)


def distillation_loss(scores: Tensor, labels: Tensor, normalize_scores: bool = True, size_average: bool = True) -> Tensor:
    """PyLate's ``Distillation`` loss from the student's [B, K] scores and the teacher's [B, K]
    scores: KL(softmax(labels) || softmax(scores)), min-max normalising the student's scores per
    row first when ``normalize_scores``; averaged over queries (``size_average``) or summed."""
    if normalize_scores:
        scores = min_max_normalize(scores)
    return kdops.listwise_kd_loss(scores, labels.detach().to(scores.dtype), reduction="mean" if size_average else "sum")

