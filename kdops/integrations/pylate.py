"""ColBERT scoring and listwise distillation with PyLate's argument conventions, backed by
:func:`kdops.maxsim` and :func:`kdops.listwise_kd_loss`. Needs no PyLate install; with PyLate,
its losses take these scorers through their ``score_metric`` argument::

    from pylate import losses
    from kdops.integrations import pylate as kd_pylate
    loss = losses.Distillation(model, score_metric=kd_pylate.colbert_kd_scores)
    loss = losses.Contrastive(model, score_metric=kd_pylate.ColBERTScores())

Masks can be any token subset (PyLate's skiplist drops punctuation mid-sequence), never just a
prefix length. What a masked token does is a choice, ``masking``:

- ``"zero"`` (default), PyLate's torch path: a masked token's similarity is 0. A masked
  document token then wins a query token's max whenever every real similarity is negative.
- ``"exclude"``: a masked document token never wins a max, and a document without a valid
  token scores 0 (kdops' own semantics, and PyLate's LIK backend's).

A masked query token adds 0 either way.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

import kdops

__all__ = [
    "ColBERTScores",
    "colbert_kd_scores",
    "colbert_scores",
    "colbert_scores_pairwise",
    "distillation_loss",
    "min_max_normalize",
]

Masking = Literal["zero", "exclude"]


def _maxsim(queries: Tensor, documents: Tensor, queries_mask, documents_mask, masking: Masking) -> Tensor:
    if masking not in ("zero", "exclude"):
        raise ValueError(f"masking must be 'zero' or 'exclude', got {masking!r}")
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(
            "queries_embeddings and documents_embeddings must have the same embedding size, "
            f"got {queries.shape[-1]} and {documents.shape[-1]}"
        )
    if masking == "zero" and documents_mask is not None:
        # PyLate multiplies each similarity by the mask: the same as zeroing the masked tokens'
        # embeddings (their similarities are then exactly 0, and so are their gradients).
        documents = documents * documents_mask.unsqueeze(-1).to(documents.dtype)
        documents_mask = None
    return kdops.maxsim(queries, documents, queries_mask, documents_mask)


def colbert_scores(
    queries_embeddings: Tensor,
    documents_embeddings: Tensor,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    *,
    masking: Masking = "zero",
) -> Tensor:
    """All pairs: queries [Nq, Lq, d] x documents [Nd, Ld, d] -> [Nq, Nd] (PyLate's ``colbert_scores``)."""
    return _maxsim(queries_embeddings, documents_embeddings, queries_mask, documents_mask, masking)


def colbert_kd_scores(
    queries_embeddings: Tensor,
    documents_embeddings: Tensor,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    *,
    masking: Masking = "zero",
) -> Tensor:
    """Each query against its candidates: [B, Lq, d] x [B, K, Ld, d] -> [B, K] (PyLate's
    ``colbert_kd_scores``, the default ``score_metric`` of ``pylate.losses.Distillation``)."""
    return _maxsim(queries_embeddings, documents_embeddings, queries_mask, documents_mask, masking)


def _padded(side) -> tuple[Tensor, Tensor | None]:
    """A tensor as is, or a list of [L_i, d] tensors padded once with a mask of its real rows."""
    if isinstance(side, Tensor):
        return side, None
    lengths = torch.tensor([len(item) for item in side])
    items = torch.nn.utils.rnn.pad_sequence(list(side), batch_first=True)
    return items, (torch.arange(items.shape[1]) < lengths.unsqueeze(1)).to(items.device)


def colbert_scores_pairwise(queries_embeddings, documents_embeddings) -> Tensor:
    """Matched pairs -> [B] (PyLate's ``colbert_scores_pairwise``): ``[B, Lq, d]`` and
    ``[B, Ld, d]`` tensors, or lists of ``[L_i, d]`` tensors (padded once here; the padding is
    excluded, since PyLate's per-pair loop never sees any)."""
    queries, queries_mask = _padded(queries_embeddings)
    documents, documents_mask = _padded(documents_embeddings)
    mask = None if documents_mask is None else documents_mask.unsqueeze(1)
    return _maxsim(queries, documents.unsqueeze(1), queries_mask, mask, "exclude").squeeze(1)


class ColBERTScores:
    """In-batch scoring (PyLate's ``ColBERTScores``, the default ``score_metric`` of
    ``pylate.losses.Contrastive``): queries [Q, Lq, d] x document groups [G, N, Ld, d] ->
    [Q, G*N], column ``g*N + n``, by one all-pairs :func:`kdops.maxsim` over the G*N documents."""

    def __init__(self, masking: Masking = "zero") -> None:
        self.masking = masking

    def __call__(
        self,
        queries_embeddings: Tensor,
        documents_embeddings: Tensor,
        queries_mask: Tensor | None = None,
        documents_mask: Tensor | None = None,
    ) -> Tensor:
        if documents_embeddings.dim() != 4:
            raise ValueError(
                "documents_embeddings must be [groups, n_docs, tokens, dim] (4-D), "
                f"got shape {list(documents_embeddings.shape)}"
            )
        flat_mask = None if documents_mask is None else documents_mask.flatten(0, 1)
        return _maxsim(queries_embeddings, documents_embeddings.flatten(0, 1), queries_mask, flat_mask, self.masking)


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
