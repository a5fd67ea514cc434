"""sentence-transformers drop-ins backed by kdops' fused ops.

Each class subclasses its sentence-transformers counterpart, so it takes the same constructor
arguments, the same ``(sentence_features, labels)`` call, and keeps its config and citation;
only the loss computation is replaced::

    from kdops.integrations.sentence_transformers import MarginMSELoss
    loss = MarginMSELoss(model)          # was: sentence_transformers.losses.MarginMSELoss(model)
"""

from __future__ import annotations

try:
    from sentence_transformers.sentence_transformer import losses as _dense_losses
except ImportError as err:  # pragma: no cover - exercised only without the package
    raise ImportError(
        "kdops.integrations.sentence_transformers needs sentence-transformers: pip install 'sentence-transformers>=6.2'"
    ) from err

import torch
from torch import Tensor

import kdops

__all__ = ["MarginMSELoss", "teacher_scores_from_labels"]


def teacher_scores_from_labels(labels: Tensor, batch_size: int, negatives: int) -> Tensor:
    """sentence-transformers' Margin-MSE labels as [B, 1+N] teacher scores.

    Labels are either raw teacher scores [B, 1+N] (positive first), or teacher margins
    score(q, pos) - score(q, neg_j) as [B, N] (or [B] for one negative). Margins m_j become the
    scores [0, -m_1, ..., -m_N], whose margins are exactly m_j."""
    labels = labels.detach()
    if labels.shape == (batch_size, negatives + 1):
        return labels
    if labels.shape == (batch_size,):
        labels = labels.unsqueeze(1)
    if labels.shape != (batch_size, negatives):
        raise ValueError(
            f"Labels shape {labels.shape} does not match expected shape {(batch_size, negatives)}. "
            "Ensure that your dataset labels/scores are 1) lists of differences between positive scores and "
            "negatives scores (length `num_negatives`), or 2) lists of positive and negative scores "
            "(length `num_negatives + 1`)."
        )
    return torch.cat([labels.new_zeros(batch_size, 1), -labels], dim=1)


class MarginMSELoss(_dense_losses.MarginMSELoss):
    """``sentence_transformers.losses.MarginMSELoss`` computed by :func:`kdops.margin_mse`:
    the student's scores of (query, positive, negatives...) under ``similarity_fct`` form a
    [B, 1+N] matrix, matched to the teacher's margins in one fused op (same value and gradients
    as the original: the mean over the B*N squared margin differences)."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        query, *documents = embeddings
        student = torch.stack([self.similarity_fct(query, doc) for doc in documents], dim=1)
        teacher = teacher_scores_from_labels(labels, query.shape[0], len(documents) - 1)
        return kdops.margin_mse(student, teacher.to(student.dtype))
