"""sentence-transformers drop-ins backed by kdops' fused ops.

Each loss subclasses its sentence-transformers counterpart, so it takes the same constructor
arguments, the same ``(sentence_features, labels)`` call, and keeps its config and citation;
only the scoring and the loss computation are replaced::

    from kdops.integrations.sentence_transformers import MarginMSELoss
    loss = MarginMSELoss(model)          # was: sentence_transformers.losses.MarginMSELoss(model)

Multi-vector (ColBERT) models: :func:`colbert_scores`, :func:`colbert_kd_scores` and
:func:`colbert_scores_pairwise` have the signatures of ``multi_vector_encoder.scoring``'s and
work as the ``similarity_fct`` of its losses; :class:`MultiVectorMarginMSELoss`,
:class:`MultiVectorDistillKLDivLoss` and :class:`MultiVectorMultipleNegativesRankingLoss` use
them by default. Two deliberate differences from sentence-transformers' scoring: a document
with no valid token scores 0 (sentence-transformers: -1e9), and ``chunk_elements`` is accepted
but unused, since kdops never builds the token-similarity tensor it budgets.
"""

from __future__ import annotations

try:
    from sentence_transformers.base.losses.merged_forward import embed_columns_padded
    from sentence_transformers.multi_vector_encoder import losses as _mv_losses
    from sentence_transformers.sentence_transformer import losses as _dense_losses
    from sentence_transformers.util.misc import check_teacher_targets
    from sentence_transformers.util.tensor import stack_padded_token_embeddings
except ImportError as err:  # pragma: no cover - exercised only without the package
    raise ImportError(
        "kdops.integrations.sentence_transformers needs sentence-transformers: pip install 'sentence-transformers>=6.2'"
    ) from err

import torch
from torch import Tensor, nn

import kdops

__all__ = [
    "MarginMSELoss",
    "MultiVectorDistillKLDivLoss",
    "MultiVectorMarginMSELoss",
    "MultiVectorMultipleNegativesRankingLoss",
    "colbert_kd_scores",
    "colbert_scores",
    "colbert_scores_pairwise",
    "teacher_scores_from_labels",
]


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


# --- multi-vector (ColBERT) scoring -----------------------------------------------------------


def _as_tensor(value, name: str) -> Tensor | None:
    if value is None or isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)):
        raise TypeError(f"{name}: kdops scores padded tensors; pad the list first (e.g. torch.nn.utils.rnn.pad_sequence)")
    return torch.as_tensor(value)


def _float32_maxsim(queries, documents, queries_mask, documents_mask, length_normalize: bool) -> Tensor:
    """kdops.maxsim with sentence-transformers' conventions: float32 scores, and, when no query
    mask is given, a query's tokens counted as its non-zero rows (zero rows are padding; a zero
    row adds 0 to the sum either way)."""
    queries = _as_tensor(queries, "queries_embeddings")
    if queries_mask is None and length_normalize:
        queries_mask = queries.ne(0).any(dim=-1)
    documents = _as_tensor(documents, "documents_embeddings")
    return kdops.maxsim(queries, documents, queries_mask, documents_mask, length_normalize=length_normalize).float()


def colbert_scores(
    queries_embeddings,
    documents_embeddings,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
) -> Tensor:
    """In-batch ColBERT scores: queries [Q, Lq, d] against document groups [D, N, Ld, d] ->
    [Q, D*N] float32, column j*N + n the n-th document of group j (sentence-transformers'
    query-major order), by one :func:`kdops.maxsim` call over all D*N documents."""
    documents = _as_tensor(documents_embeddings, "documents_embeddings")
    flat = documents.flatten(0, 1)
    flat_mask = None if documents_mask is None else documents_mask.flatten(0, 1)
    return _float32_maxsim(queries_embeddings, flat, queries_mask, flat_mask, length_normalize)


def colbert_kd_scores(
    queries_embeddings,
    documents_embeddings,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
) -> Tensor:
    """Each query against its own candidates: queries [B, Lq, d], documents [B, N, Ld, d] ->
    [B, N] float32, by :func:`kdops.maxsim`'s per-query layout (one launch, no per-column loop)."""
    return _float32_maxsim(queries_embeddings, documents_embeddings, queries_mask, documents_mask, length_normalize)


def colbert_scores_pairwise(
    queries_embeddings,
    documents_embeddings,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
) -> Tensor:
    """Matched pairs: queries [B, Lq, d] and documents [B, Ld, d] -> [B] float32 (the per-query
    layout with one candidate each)."""
    documents = _as_tensor(documents_embeddings, "documents_embeddings")
    return colbert_kd_scores(
        queries_embeddings,
        documents.unsqueeze(1),
        queries_mask,
        None if documents_mask is None else documents_mask.unsqueeze(1),
        length_normalize=length_normalize,
    ).squeeze(1)


# --- multi-vector losses ----------------------------------------------------------------------


class MarginMSEOfMargins(nn.Module):
    """nn.MSELoss()(student_margins, teacher_margins) as :func:`kdops.margin_mse`: margins m
    are the scores [0, -m], whose positive-minus-negative margins are m."""

    def forward(self, student_margins: Tensor, teacher_margins: Tensor) -> Tensor:
        zeros = student_margins.new_zeros(student_margins.shape[0], 1)
        return kdops.margin_mse(torch.cat([zeros, -student_margins], 1), torch.cat([zeros, -teacher_margins], 1))


class MultiVectorMarginMSELoss(_mv_losses.MultiVectorMarginMSELoss):
    """sentence-transformers' ``MultiVectorMarginMSELoss`` with kdops MaxSim scoring
    (:func:`colbert_scores_pairwise` by default) and :func:`kdops.margin_mse` as the loss."""

    def __init__(self, model, *, similarity_fct=None, mini_batch_size: int | None = None) -> None:
        super().__init__(model, similarity_fct=similarity_fct or colbert_scores_pairwise, mini_batch_size=mini_batch_size)
        self.loss_function = MarginMSEOfMargins()


class MultiVectorDistillKLDivLoss(_mv_losses.MultiVectorDistillKLDivLoss):
    """sentence-transformers' ``MultiVectorDistillKLDivLoss`` (ColBERTv2 / PyLate listwise
    distillation) with kdops MaxSim scoring (:func:`colbert_kd_scores` by default) and
    :func:`kdops.listwise_kd_loss`: Ts^2 * KL(softmax(teacher/Tt) || softmax(student/Ts)),
    averaged over queries, in one fused op."""

    def __init__(self, model, *, similarity_fct=None, temperature: float = 1.0, student_temperature: float | None = None,
                 teacher_temperature: float | None = None, mini_batch_size: int | None = None) -> None:
        super().__init__(
            model, similarity_fct=similarity_fct or colbert_kd_scores, temperature=temperature,
            student_temperature=student_temperature, teacher_temperature=teacher_temperature,
            mini_batch_size=mini_batch_size,
        )

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        sentence_features = [dict(features) for features in sentence_features]
        if len(sentence_features) < 3:
            raise ValueError(
                f"{type(self).__name__} expects at least 3 sentence features (query, document_1, ..., "
                f"document_N with N >= 2), but got {len(sentence_features)}."
            )
        query_features = sentence_features[0]
        query_outputs = self.model(query_features, task=query_features.get("task", "query"))
        queries = query_outputs["token_embeddings"]
        n_ways = len(sentence_features) - 1
        if labels.shape != (queries.size(0), n_ways):
            raise ValueError(
                f"{type(self).__name__} expects teacher scores of shape (batch_size, N) = "
                f"({queries.size(0)}, {n_ways}) for N candidate documents per query, but got {tuple(labels.shape)}."
            )
        documents, documents_mask = stack_padded_token_embeddings(
            *embed_columns_padded(self.model, sentence_features[1:], self.mini_batch_size, task_default="document")
        )
        scores = self.similarity_fct(
            queries, documents, queries_mask=query_outputs["attention_mask"].bool(), documents_mask=documents_mask
        )
        teacher = labels.detach().to(scores.dtype)
        if not self._checked_teacher_scale:
            self._checked_teacher_scale = True
            check_teacher_targets(
                torch.softmax(teacher / self.teacher_temperature, dim=-1), labels, self.teacher_temperature,
                type(self).__name__,
            )
        return kdops.listwise_kd_loss(
            scores, teacher, student_temperature=self.student_temperature, teacher_temperature=self.teacher_temperature
        )


class MultiVectorMultipleNegativesRankingLoss(_mv_losses.MultiVectorMultipleNegativesRankingLoss):
    """sentence-transformers' ``MultiVectorMultipleNegativesRankingLoss`` (in-batch negatives)
    with kdops MaxSim scoring (:func:`colbert_scores`) by default: the [Q, Q*N] in-batch score
    matrix comes from one fused MaxSim that never builds the Q x Q*N x Lq x Ld similarity tensor.
    ``gather_across_devices=True`` works as in the original (same loss and gradients, tested on
    3 ranks); for packed documents or uneven per-rank batches, see :mod:`kdops.distributed`."""

    def __init__(self, model, *, similarity_fct=None, **kwargs) -> None:
        super().__init__(model, similarity_fct=similarity_fct or colbert_scores, **kwargs)
