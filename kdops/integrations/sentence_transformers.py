"""sentence-transformers drop-ins backed by kdops' fused ops.

Losses subclass their sentence-transformers counterparts, so they take the same constructor
arguments and the same ``(sentence_features, labels)`` call; only the scoring and the loss
computation are replaced::

    from kdops.integrations.sentence_transformers import MarginMSELoss
    loss = MarginMSELoss(model)  # was sentence_transformers.sentence_transformer.losses.MarginMSELoss

Or patch the installed library in one line, so that its own losses, scorers and evaluators run
on kdops (``unpatch()`` restores it)::

    import kdops.integrations.sentence_transformers as kd_st
    kd_st.patch()

Multi-vector (ColBERT) scorers have the signatures of sentence-transformers' ``util.maxsim``,
``util.maxsim_pairwise``, ``multi_vector_encoder.scoring.colbert_*`` and their MeanMaxSim
``mean_*`` forms (kdops' one extra, ``empty_document_score``, is keyword-only, after theirs),
and accept everything those do (padded tensors with masks, a ``(1, L)`` mask broadcast over the
batch, ragged lists of ``[L_i, d]`` tensors, numpy arrays or nested Python lists, one ``[L, d]``
item), so they serve as a loss's ``similarity_fct``, an evaluator's ``similarity_fct`` or
``score_functions`` entry, or to score encoded outputs. Where they differ from
sentence-transformers, on purpose:

- bf16/fp16 embeddings: kdops accumulates every token similarity in float32;
  sentence-transformers rounds each one to the input dtype before the max.
- ``chunk_elements`` is accepted and ignored: it budgets the similarity tensor that
  sentence-transformers builds, which kdops never builds (memory O(queries x documents x
  query tokens)).

Their ``__name__`` is sentence-transformers' own (``colbert_scores``, ``maxsim``, ...), so a
loss or evaluator config, a model card and a saved model read as with sentence-transformers and
load where kdops is not installed; which implementation scores is chosen when the code runs
(``patch()`` or a kdops loss), not stored with the model: the two compute the same function.

An empty document (no valid token) scores ``EMPTY_DOCUMENT_SCORE`` (-1e9) as in
sentence-transformers, with the same one-time warning; ``empty_document_score=0.0`` gives
kdops' own 0.

A loss whose loss module the user replaced (``loss.loss_fct = nn.L1Loss()`` on
:class:`MarginMSELoss`, ``loss.loss_function`` on the multi-vector losses) runs the original
sentence-transformers computation with that module, after a one-time warning that kdops' fused
loss is off: the fused kernels compute one specific loss, and anything else is the user's call.
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

import warnings
from collections.abc import Callable

from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
from sentence_transformers.multi_vector_encoder.scoring import colbert as _st_colbert
from sentence_transformers.util import similarity as _st_similarity
from transformers.utils import is_torchdynamo_compiling

import torch
from torch import Tensor, nn

import kdops
from kdops.integrations import _multi_vector_inputs as _in
from kdops.integrations._patching import Patcher
from kdops.losses import learned_temperature

__all__ = [
    "EMPTY_DOCUMENT_SCORE",
    "CachedMultiVectorMultipleNegativesRankingLoss",
    "MarginMSELoss",
    "MultiVectorDistillKLDivLoss",
    "MultiVectorMarginMSELoss",
    "MultiVectorMultipleNegativesRankingLoss",
    "colbert_kd_scores",
    "colbert_scores",
    "colbert_scores_pairwise",
    "maxsim",
    "maxsim_pairwise",
    "mean_colbert_kd_scores",
    "mean_colbert_scores",
    "mean_colbert_scores_pairwise",
    "mean_maxsim",
    "mean_maxsim_pairwise",
    "patch",
    "teacher_scores_from_labels",
    "unpatch",
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


KDOPS_CITATION = f"""
@software{{kdops,
    title = {{kdops: fused C++/CUDA kernels for knowledge distillation in neural ranking}},
    note = {{the fused loss and MaxSim kernels behind this loss}},
    version = {{{kdops.__version__}}},
}}
"""


class _KdopsLoss:
    """Mixed in before each drop-in's sentence-transformers base: the model card cites kdops
    beside the method's paper, and a loss module the user replaced turns kdops' fused loss off
    (the original computation runs with the user's module), with a one-time warning."""

    @property
    def citation(self) -> str:
        return super().citation.rstrip() + "\n" + KDOPS_CITATION

    def _fused(self, attribute: str, is_kdops_loss: Callable[[nn.Module], bool]) -> bool:
        module = getattr(self, attribute)
        if is_kdops_loss(module):
            return True
        if not getattr(self, "_warned_not_fused", False):
            self._warned_not_fused = True
            warnings.warn(
                f"{type(self).__name__}.{attribute} was set to {module!r}, which kdops does not fuse: running "
                "sentence-transformers' original loss computation with it (scoring still uses similarity_fct).",
                UserWarning,
                stacklevel=3,
            )
        return False


def _is_mean_mse(module: nn.Module) -> bool:
    return type(module) is nn.MSELoss and module.reduction == "mean"


def _is_batchmean_kl_of_log_targets(module: nn.Module) -> bool:
    return type(module) is nn.KLDivLoss and module.reduction == "batchmean" and module.log_target


class MarginMSELoss(_KdopsLoss, _dense_losses.MarginMSELoss):
    """``sentence_transformers.sentence_transformer.losses.MarginMSELoss`` computed by
    :func:`kdops.margin_mse`: the student's scores of (query, positive, negatives...) under
    ``similarity_fct`` form a [B, 1+N] matrix, matched to the teacher's margins in one fused op
    (same value and gradients as the original: the mean over the B*N squared margin
    differences). A ``loss_fct`` other than the default ``nn.MSELoss()`` runs the original."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if not self._fused("loss_fct", _is_mean_mse):
            return super().compute_loss_from_embeddings(embeddings, labels)
        query, *documents = embeddings
        student = torch.stack([self.similarity_fct(query, doc) for doc in documents], dim=1)
        teacher = teacher_scores_from_labels(labels, query.shape[0], len(documents) - 1)
        return kdops.margin_mse(student, teacher.to(student.dtype))


# --- multi-vector (ColBERT) scoring -----------------------------------------------------------

#: sentence-transformers' score for a document without a single valid token: below every real
#: score, so such a document ranks last. kdops' own ops score it 0; pass
#: ``empty_document_score=0.0`` to any scorer here for that.
EMPTY_DOCUMENT_SCORE = -1e9

def _warn_empty_documents(empty: Tensor, score: float) -> None:
    """sentence-transformers' one-time warning about documents without a valid token, through its
    own logger (so one warning covers both implementations). Read only where that is free: on a
    CPU tensor outside torch.compile (reading a GPU tensor is a host sync)."""
    if not is_torchdynamo_compiling() and empty.device.type == "cpu" and bool(empty.any()):
        _st_similarity.logger.warning_once(
            "Encountered documents without any scoreable token during multi-vector similarity scoring, "
            "e.g. because MultiVectorMask (via keep_only_token_ids or skiplist_words) masked out every "
            "token, or because a document embedding has zero token vectors. These documents score "
            f"{score:.0e} (before any normalization)"
            + (", ranking them below every real document." if score == EMPTY_DOCUMENT_SCORE else ".")
        )


def _score(
    queries,
    documents,
    queries_mask,
    documents_mask,
    *,
    layout: str,
    names: tuple[str, str, str, str],
    length_normalize: bool,
    empty_document_score: float,
    device: str | torch.device | None = None,
) -> Tensor:
    """MaxSim with sentence-transformers' conventions, by one kdops call.

    ``layout``: 'all_pairs' (documents ``[Nd, Ld, d]`` or a ragged list -> ``[Nq, Nd]``),
    'pairwise' (``[B]``), 'per_query' (documents ``[B, K, Ld, d]`` -> ``[B, K]``) or 'grouped'
    (documents ``[G, N, Ld, d]`` -> ``[Nq, G*N]``, column ``g*N + n``). ``names`` are the caller's
    argument names (queries, documents, queries mask, documents mask) for error messages.
    Scores are float32; an empty document scores ``empty_document_score`` before the MeanMaxSim
    division, as in sentence-transformers; a result lands on the documents' device."""
    q_items, q_mask = _in.split_side(queries, queries_mask, names[0], names[2])
    d_items, d_mask = _in.split_side(documents, documents_mask, names[1], names[3])
    if layout == "pairwise" and len(q_items) != len(d_items):
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must hold the same number of items to score as pairs, "
            f"got {len(q_items)} and {len(d_items)}"
        )
    result_device = _in.device_of(d_items)
    if len(q_items) == 0 or len(d_items) == 0:
        shape = (len(q_items),) if layout == "pairwise" else (len(q_items), len(d_items))
        if layout in ("per_query", "grouped") and isinstance(d_items, Tensor):
            shape = (len(q_items), d_items.shape[1] * (len(d_items) if layout == "grouped" else 1))
        return torch.zeros(shape, dtype=torch.float32, device=result_device)
    scoring_device = torch.device(device) if device is not None else result_device
    q_items, q_mask = _in.to_device(q_items, q_mask, scoring_device)
    d_items, d_mask = _in.to_device(d_items, d_mask, scoring_device)

    q = _in.pad(q_items, q_mask, names[0], names[2])
    if layout == "all_pairs" and isinstance(d_items, list):
        d = _in.pack(d_items, d_mask, names[1], names[3])
        _in.check_pair(q.embeddings, d.tokens, names[:2])
        scores = kdops.maxsim_packed(q.embeddings, d.tokens, d.offsets, q.mask)
        empty = d.empty()
    else:
        d = _in.pad(d_items, d_mask, names[1], names[3], rank=4 if layout in ("per_query", "grouped") else 3)
        _in.check_pair(q.embeddings, d.embeddings, names[:2])
        D, D_mask = d.embeddings, d.mask
        if layout == "pairwise":  # each query against its one document: the per-query layout, K = 1
            D, D_mask = D.unsqueeze(1), D_mask.unsqueeze(1)
        elif layout == "grouped":  # all pairs over the G*N documents, in g*N + n order
            D, D_mask = D.flatten(0, 1), D_mask.flatten(0, 1)
        scores = kdops.maxsim(q.embeddings, D, q.mask, D_mask)
        empty = d.empty()
        if layout == "pairwise":
            scores = scores.squeeze(1)
        elif layout == "grouped":
            empty = empty.flatten()
    scores = scores.float()
    _warn_empty_documents(empty, empty_document_score)
    if empty_document_score != 0.0:  # kdops already scores an empty document 0
        scores = scores.masked_fill(empty, empty_document_score)
    if length_normalize:
        counts = q.mask.sum(dim=-1).clamp(min=1).to(scores.dtype)
        scores = scores / (counts if scores.dim() == 1 else counts.unsqueeze(1))
    return scores.to(result_device)


_AB_NAMES = ("a", "b", "a_mask", "b_mask")
_COLBERT_NAMES = ("queries_embeddings", "documents_embeddings", "queries_mask", "documents_mask")


def maxsim(
    a,
    b,
    a_mask=None,
    b_mask=None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
    device: str | torch.device | None = None,
    *,
    empty_document_score: float = EMPTY_DOCUMENT_SCORE,
) -> Tensor:
    """``sentence_transformers.util.maxsim`` by kdops: every query in ``a`` against every
    document in ``b`` -> ``[len(a), len(b)]`` float32.

    ``a`` and ``b`` are padded ``[N, L, d]`` tensors, ragged lists of ``[L_i, d]`` tensors (what
    ``MultiVectorEncoder.encode_query`` / ``encode_document`` return), numpy arrays, or one
    ``[L, d]`` item. Ragged documents are scored packed (:func:`kdops.maxsim_packed`), never
    padded. Masks: tensors or lists of per-item masks, nonzero = real token; without one, a
    padded tensor's all-zero rows are padding. Use it as a ``score_functions`` entry of
    ``MultiVectorInformationRetrievalEvaluator`` or the ``similarity_fct`` of
    ``MultiVectorRerankingEvaluator``. ``device`` is where scoring runs (the result comes back to
    the documents' device); ``chunk_elements`` is accepted for sentence-transformers' signature
    and ignored, as kdops builds no similarity tensor to budget; an empty document scores ``empty_document_score`` (see
    :data:`EMPTY_DOCUMENT_SCORE`)."""
    return _score(a, b, a_mask, b_mask, layout="all_pairs", names=_AB_NAMES, length_normalize=length_normalize,
                  empty_document_score=empty_document_score, device=device)


def maxsim_pairwise(
    a,
    b,
    a_mask=None,
    b_mask=None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
    device: str | torch.device | None = None,
    *,
    empty_document_score: float = EMPTY_DOCUMENT_SCORE,
) -> Tensor:
    """``sentence_transformers.util.maxsim_pairwise`` by kdops: ``a[i]`` against ``b[i]`` ->
    ``[len(a)]`` float32, inputs as in :func:`maxsim` (ragged lists are padded once)."""
    return _score(a, b, a_mask, b_mask, layout="pairwise", names=_AB_NAMES, length_normalize=length_normalize,
                  empty_document_score=empty_document_score, device=device)


def mean_maxsim(a, b, a_mask=None, b_mask=None, chunk_elements=None, length_normalize: bool = True, device=None, *,
                empty_document_score: float = EMPTY_DOCUMENT_SCORE) -> Tensor:
    """:func:`maxsim` divided by each query's number of valid tokens (MeanMaxSim)."""
    return maxsim(a, b, a_mask, b_mask, chunk_elements, length_normalize, device, empty_document_score=empty_document_score)


def mean_maxsim_pairwise(a, b, a_mask=None, b_mask=None, chunk_elements=None, length_normalize: bool = True,
                         device=None, *, empty_document_score: float = EMPTY_DOCUMENT_SCORE) -> Tensor:
    """:func:`maxsim_pairwise` divided by each query's number of valid tokens (MeanMaxSim)."""
    return maxsim_pairwise(a, b, a_mask, b_mask, chunk_elements, length_normalize, device,
                           empty_document_score=empty_document_score)


def colbert_scores(
    queries_embeddings,
    documents_embeddings,
    queries_mask=None,
    documents_mask=None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
    *,
    empty_document_score: float = EMPTY_DOCUMENT_SCORE,
) -> Tensor:
    """In-batch ColBERT scores (``multi_vector_encoder.scoring.colbert_scores``): queries
    ``[Q, Lq, d]`` against document groups ``[G, N, Ld, d]`` -> ``[Q, G*N]`` float32, column
    ``g*N + n`` the n-th document of group g, by one :func:`kdops.maxsim` call over all G*N
    documents (never a ``Q x G*N x Lq x Ld`` similarity tensor)."""
    return _score(queries_embeddings, documents_embeddings, queries_mask, documents_mask, layout="grouped",
                  names=_COLBERT_NAMES, length_normalize=length_normalize, empty_document_score=empty_document_score)


def colbert_kd_scores(
    queries_embeddings,
    documents_embeddings,
    queries_mask=None,
    documents_mask=None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
    *,
    empty_document_score: float = EMPTY_DOCUMENT_SCORE,
) -> Tensor:
    """Each query against its own candidates (``multi_vector_encoder.scoring.colbert_kd_scores``):
    queries ``[B, Lq, d]``, documents ``[B, N, Ld, d]`` -> ``[B, N]`` float32, in one launch."""
    return _score(queries_embeddings, documents_embeddings, queries_mask, documents_mask, layout="per_query",
                  names=_COLBERT_NAMES, length_normalize=length_normalize, empty_document_score=empty_document_score)


def colbert_scores_pairwise(
    queries_embeddings,
    documents_embeddings,
    queries_mask=None,
    documents_mask=None,
    chunk_elements: int | None = None,
    length_normalize: bool = False,
    *,
    empty_document_score: float = EMPTY_DOCUMENT_SCORE,
) -> Tensor:
    """Matched pairs (``multi_vector_encoder.scoring.colbert_scores_pairwise``): ``[B, Lq, d]``
    and ``[B, Ld, d]`` tensors, or ragged lists, -> ``[B]`` float32. Works as the
    ``similarity_fct`` of ``MultiVectorDistillationEvaluator`` and ``MultiVectorMarginMSELoss``."""
    return _score(queries_embeddings, documents_embeddings, queries_mask, documents_mask, layout="pairwise",
                  names=_COLBERT_NAMES, length_normalize=length_normalize, empty_document_score=empty_document_score)


def mean_colbert_scores(queries_embeddings, documents_embeddings, queries_mask=None, documents_mask=None,
                        chunk_elements=None, length_normalize: bool = True, *,
                        empty_document_score: float = EMPTY_DOCUMENT_SCORE) -> Tensor:
    """:func:`colbert_scores` as MeanMaxSim (divided by each query's number of valid tokens)."""
    return colbert_scores(queries_embeddings, documents_embeddings, queries_mask, documents_mask, chunk_elements,
                          length_normalize, empty_document_score=empty_document_score)


def mean_colbert_kd_scores(queries_embeddings, documents_embeddings, queries_mask=None, documents_mask=None,
                           chunk_elements=None, length_normalize: bool = True, *,
                           empty_document_score: float = EMPTY_DOCUMENT_SCORE) -> Tensor:
    """:func:`colbert_kd_scores` as MeanMaxSim."""
    return colbert_kd_scores(queries_embeddings, documents_embeddings, queries_mask, documents_mask, chunk_elements,
                             length_normalize, empty_document_score=empty_document_score)


def mean_colbert_scores_pairwise(queries_embeddings, documents_embeddings, queries_mask=None, documents_mask=None,
                                 chunk_elements=None, length_normalize: bool = True, *,
                                 empty_document_score: float = EMPTY_DOCUMENT_SCORE) -> Tensor:
    """:func:`colbert_scores_pairwise` as MeanMaxSim."""
    return colbert_scores_pairwise(queries_embeddings, documents_embeddings, queries_mask, documents_mask,
                                   chunk_elements, length_normalize, empty_document_score=empty_document_score)


# --- multi-vector losses ----------------------------------------------------------------------


class MarginMSEOfMargins(nn.Module):
    """nn.MSELoss()(student_margins, teacher_margins) as :func:`kdops.margin_mse`: margins m
    are the scores [0, -m], whose positive-minus-negative margins are m."""

    def forward(self, student_margins: Tensor, teacher_margins: Tensor) -> Tensor:
        zeros = student_margins.new_zeros(student_margins.shape[0], 1)
        return kdops.margin_mse(torch.cat([zeros, -student_margins], 1), torch.cat([zeros, -teacher_margins], 1))


class MultiVectorMarginMSELoss(_KdopsLoss, _mv_losses.MultiVectorMarginMSELoss):
    """sentence-transformers' ``MultiVectorMarginMSELoss`` with kdops MaxSim scoring
    (:func:`colbert_scores_pairwise` by default) and :func:`kdops.margin_mse` as the loss
    (``loss_function``; a module the user assigns there runs instead, as in the original)."""

    def __init__(self, model, *, similarity_fct=None, mini_batch_size: int | None = None) -> None:
        super().__init__(model, similarity_fct=similarity_fct or colbert_scores_pairwise, mini_batch_size=mini_batch_size)
        self.loss_function = MarginMSEOfMargins()

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        # The original forward ends in self.loss_function whichever module it holds: only warn.
        self._fused("loss_function", lambda module: isinstance(module, MarginMSEOfMargins))
        return super().forward(sentence_features, labels)


class MultiVectorDistillKLDivLoss(_KdopsLoss, _mv_losses.MultiVectorDistillKLDivLoss):
    """sentence-transformers' ``MultiVectorDistillKLDivLoss`` (ColBERTv2 / PyLate listwise
    distillation) with kdops MaxSim scoring (:func:`colbert_kd_scores` by default) and
    :func:`kdops.listwise_kd_loss`: Ts^2 * KL(softmax(teacher/Tt) || softmax(student/Ts)),
    averaged over queries, in one fused op. A ``loss_function`` other than the default
    ``nn.KLDivLoss(reduction="batchmean", log_target=True)`` runs the original.

    kdops' one extra, ``learn_temperature=True``, learns ``temperature`` with the model
    (:class:`kdops.LearnedTemperature`, starting at ``temperature``; the trainer optimises it
    with the loss's other parameters), on each side whose own temperature is None."""

    def __init__(self, model, *, similarity_fct=None, temperature: float = 1.0, student_temperature: float | None = None,
                 teacher_temperature: float | None = None, mini_batch_size: int | None = None,
                 learn_temperature: bool = False) -> None:
        super().__init__(
            model, similarity_fct=similarity_fct or colbert_kd_scores, temperature=temperature,
            student_temperature=student_temperature, teacher_temperature=teacher_temperature,
            mini_batch_size=mini_batch_size,
        )
        self.learned_temperature = learned_temperature(learn_temperature, temperature, student_temperature,
                                                       teacher_temperature)
        # The sides the learned temperature stands for (the original stores `temperature` in
        # student_temperature / teacher_temperature when they are None).
        self._learned_sides = (student_temperature is None, teacher_temperature is None)

    def get_config_dict(self) -> dict:
        config = super().get_config_dict()
        if self.learned_temperature is not None:
            config["learn_temperature"] = True
        return config

    def _temperatures(self) -> tuple[float | Tensor, float | Tensor]:
        if self.learned_temperature is None:
            return self.student_temperature, self.teacher_temperature
        learned = self.learned_temperature()
        student, teacher = self._learned_sides
        return (learned if student else self.student_temperature, learned if teacher else self.teacher_temperature)

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        if not self._fused("loss_function", _is_batchmean_kl_of_log_targets):
            return super().forward(sentence_features, labels)
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
        student_temperature, teacher_temperature = self._temperatures()
        return kdops.listwise_kd_loss(
            scores, teacher, student_temperature=student_temperature, teacher_temperature=teacher_temperature
        )


class MultiVectorMultipleNegativesRankingLoss(_KdopsLoss, _mv_losses.MultiVectorMultipleNegativesRankingLoss):
    """sentence-transformers' ``MultiVectorMultipleNegativesRankingLoss`` (in-batch negatives)
    with kdops MaxSim scoring (:func:`colbert_scores`) by default: the [Q, Q*N] in-batch score
    matrix comes from one fused MaxSim that never builds the Q x Q*N x Lq x Ld similarity tensor.
    ``gather_across_devices=True`` works as in the original (same loss and gradients, tested on
    3 ranks); for packed documents or uneven per-rank batches, see :mod:`kdops.distributed`."""

    def __init__(self, model, *, similarity_fct=None, **kwargs) -> None:
        super().__init__(model, similarity_fct=similarity_fct or colbert_scores, **kwargs)


class CachedMultiVectorMultipleNegativesRankingLoss(
    _KdopsLoss, _mv_losses.CachedMultiVectorMultipleNegativesRankingLoss
):
    """sentence-transformers' GradCache form of the in-batch loss with kdops MaxSim scoring
    (:func:`colbert_scores`) by default; every other argument works as in the original."""

    def __init__(self, model, *, similarity_fct=None, **kwargs) -> None:
        super().__init__(model, similarity_fct=similarity_fct or colbert_scores, **kwargs)


# --- one-line patch ----------------------------------------------------------------------------

_SCORERS = ("maxsim", "maxsim_pairwise", "mean_maxsim", "mean_maxsim_pairwise")
_COLBERT_SCORERS = (
    "colbert_scores", "colbert_kd_scores", "colbert_scores_pairwise",
    "mean_colbert_scores", "mean_colbert_kd_scores", "mean_colbert_scores_pairwise",
)
_LOSSES = (
    "MultiVectorMarginMSELoss", "MultiVectorDistillKLDivLoss",
    "MultiVectorMultipleNegativesRankingLoss", "CachedMultiVectorMultipleNegativesRankingLoss",
)
# sentence-transformers' own objects, taken at import (before any patch rebinds the names).
_REPLACEMENTS: dict[object, object] = {
    **{getattr(_st_similarity, name): globals()[name] for name in _SCORERS},
    **{getattr(_st_colbert, name): globals()[name] for name in _COLBERT_SCORERS},
    **{getattr(_mv_losses, name): globals()[name] for name in _LOSSES},
    _dense_losses.MarginMSELoss: MarginMSELoss,
}
_patcher = Patcher("sentence_transformers", lambda: _REPLACEMENTS)


def _rebind_similarity(models: tuple[MultiVectorEncoder, ...]) -> None:
    # A model resolves its similarity_fn_name to a function when the name is set (at load);
    # setting it again resolves it through the (un)patched SimilarityFunction.
    for model in models:
        model.similarity_fn_name = model.similarity_fn_name


def patch(*models: MultiVectorEncoder) -> list[str]:
    """Run the installed sentence-transformers on kdops: its MaxSim scorers (``util.maxsim``,
    ``maxsim_pairwise``, ``mean_*`` and ``multi_vector_encoder.scoring.colbert_*``), hence the
    evaluators' and ``model.similarity``'s default scoring and the losses' default
    ``similarity_fct``, and its losses (the four multi-vector losses and the dense
    ``MarginMSELoss``) become kdops' drop-ins, under every name the library binds them to.

    Patch before creating or loading models, or pass the models created before: a model fixes
    its ``similarity`` function when its ``similarity_fn_name`` is set. Idempotent; returns the
    ``module.attribute`` names swapped. :func:`unpatch` restores them."""
    swapped = _patcher.patch()
    _rebind_similarity(models)
    return swapped


def unpatch(*models: MultiVectorEncoder) -> list[str]:
    """Undo :func:`patch` (and rebind the given models' similarity to sentence-transformers');
    returns the names restored, empty when nothing was patched."""
    restored = _patcher.unpatch()
    _rebind_similarity(models)
    return restored
