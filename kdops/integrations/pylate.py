"""ColBERT scoring, listwise distillation and PyLate's losses with PyLate's argument
conventions, backed by :func:`kdops.maxsim` and :func:`kdops.listwise_kd_loss`. The scorers
and :func:`distillation_loss` need no PyLate install; with PyLate (1.6), one line runs its own
losses, scorers and evaluators on kdops (``unpatch()`` restores it)::

    from kdops.integrations import pylate as kd_pylate
    kd_pylate.patch()

or pick the pieces: the loss modules :class:`Distillation`, :class:`Contrastive` and
:class:`CachedContrastive` are drop-ins for PyLate's (same constructor, same call), and the
scorers fit any PyLate loss's ``score_metric``::

    loss = kd_pylate.Distillation(model)              # was pylate.losses.Distillation(model)
    loss = pylate.losses.Contrastive(model, score_metric=kd_pylate.ColBERTScores())

Scorers take PyLate's inputs: padded tensors with masks, and ``model.encode()`` output (a list
of ``[L_i, d]`` numpy arrays or tensors, padded once here with the padding excluded; PyLate's
own scorers need equal lengths there). Their ``backend=`` argument keeps PyLate's meaning:
``None``/``"auto"`` (or ``PYLATE_SCORES_BACKEND``) scores with kdops, ``"torch"``, ``"flash"``
or ``"lik"`` call PyLate's own implementation with that backend.

Masks can be any token subset (PyLate's skiplist drops punctuation mid-sequence), never just a
prefix length. What a masked token does is a choice, ``masking``:

- ``"zero"`` (default), PyLate's torch path: a masked token's similarity is 0. A masked
  document token then wins a query token's max whenever every real similarity is negative.
- ``"exclude"``: a masked document token never wins a max, and a document without a valid
  token scores 0 (kdops' own semantics, and PyLate's LIK backend's).

A masked query token adds 0 either way.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

import kdops
from kdops.integrations._patching import Patcher
from kdops.losses import learned_temperature

try:
    import pylate.losses as _pylate_losses
    import pylate.scores.colbert as _pylate_colbert
except ImportError:  # the scorers and distillation_loss work without PyLate
    _pylate_losses = _pylate_colbert = None

__all__ = [
    "CachedContrastive",
    "ColBERTScores",
    "Contrastive",
    "Distillation",
    "colbert_kd_scores",
    "colbert_scores",
    "colbert_scores_pairwise",
    "distillation_loss",
    "min_max_normalize",
    "patch",
    "unpatch",
]

Masking = Literal["zero", "exclude"]
_SCORERS = ("colbert_scores", "colbert_kd_scores", "colbert_scores_pairwise", "ColBERTScores")


def _require_pylate(what: str) -> None:
    if _pylate_colbert is None:
        raise ImportError(f"{what} needs PyLate: pip install pylate")


def _pylate_backend(backend: str | None) -> str | None:
    """None where kdops scores, else the PyLate backend asked for (``backend=`` or the
    ``PYLATE_SCORES_BACKEND`` variable, validated by PyLate's own rule)."""
    if backend is None and "PYLATE_SCORES_BACKEND" not in os.environ:
        return None
    _require_pylate(f"backend={backend!r}")
    resolved = _pylate_colbert._resolve_backend(backend)
    return None if resolved == "auto" else resolved


def _as_tensor(value, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(value, dtype=torch.float32)  # nested Python lists of numbers
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor, a numpy array or a list of [tokens, dim] items: {err}") from None


def _side(value, name: str) -> tuple[Tensor, Tensor | None]:
    """A tensor as is, or a list of ``[L_i, d]`` items (``model.encode()`` output) padded once,
    with a mask of its real rows where lengths differ."""
    if not isinstance(value, (list, tuple)):
        return _as_tensor(value, name), None
    items = [_as_tensor(item, f"{name}[{i}]") for i, item in enumerate(value)]
    for i, item in enumerate(items):
        if item.dim() != 2 or item.shape[-1] != items[0].shape[-1]:
            raise ValueError(
                f"{name}[{i}] must be a [tokens, dim] item of the same dim as {name}[0] "
                f"({list(items[0].shape)}), got shape {list(item.shape)}"
            )
    lengths = torch.tensor([len(item) for item in items])
    padded = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    if bool((lengths == padded.shape[1]).all()):
        return padded, None
    return padded, (torch.arange(padded.shape[1]) < lengths.unsqueeze(1)).to(padded.device)


def _mask(mask, name: str) -> Tensor | None:
    return None if mask is None else _as_tensor(mask, name).ne(0)


def _maxsim(queries, documents, queries_mask, documents_mask, masking: Masking) -> Tensor:
    if masking not in ("zero", "exclude"):
        raise ValueError(f"masking must be 'zero' or 'exclude', got {masking!r}")
    queries, queries_padding = _side(queries, "queries_embeddings")
    documents, documents_padding = _side(documents, "documents_embeddings")
    queries_mask, documents_mask = _mask(queries_mask, "queries_mask"), _mask(documents_mask, "documents_mask")
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(
            "queries_embeddings and documents_embeddings must have the same embedding size, "
            f"got {queries.shape[-1]} and {documents.shape[-1]}"
        )
    if queries_padding is not None:
        queries_mask = queries_padding if queries_mask is None else queries_mask & queries_padding
    if masking == "zero" and documents_mask is not None:
        # PyLate multiplies each similarity by the mask: the same as zeroing the masked tokens'
        # embeddings (their similarities are then exactly 0, and so are their gradients).
        documents = documents * documents_mask.unsqueeze(-1).to(documents.dtype)
        documents_mask = None
    if documents_padding is not None:  # padding added here is no token: it never wins a max
        documents_mask = documents_padding if documents_mask is None else documents_mask & documents_padding
    return kdops.maxsim(queries, documents, queries_mask, documents_mask)


def colbert_scores(
    queries_embeddings,
    documents_embeddings,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    backend: str | None = None,
    *,
    masking: Masking = "zero",
) -> Tensor:
    """All pairs: queries [Nq, Lq, d] x documents [Nd, Ld, d] -> [Nq, Nd] (PyLate's ``colbert_scores``);
    either side may be a list of ``[L_i, d]`` items, as ``model.encode()`` returns."""
    pylate_backend = _pylate_backend(backend)
    if pylate_backend is not None:
        return _PYLATE_ORIGINALS["colbert_scores"](
            queries_embeddings, documents_embeddings, queries_mask, documents_mask, backend=pylate_backend
        )
    return _maxsim(queries_embeddings, documents_embeddings, queries_mask, documents_mask, masking)


def colbert_kd_scores(
    queries_embeddings,
    documents_embeddings,
    queries_mask: Tensor | None = None,
    documents_mask: Tensor | None = None,
    backend: str | None = None,
    *,
    masking: Masking = "zero",
) -> Tensor:
    """Each query against its candidates: [B, Lq, d] x [B, K, Ld, d] -> [B, K] (PyLate's
    ``colbert_kd_scores``, the default ``score_metric`` of ``pylate.losses.Distillation``)."""
    pylate_backend = _pylate_backend(backend)
    if pylate_backend is not None:
        return _PYLATE_ORIGINALS["colbert_kd_scores"](
            queries_embeddings, documents_embeddings, queries_mask, documents_mask, backend=pylate_backend
        )
    return _maxsim(queries_embeddings, documents_embeddings, queries_mask, documents_mask, masking)


def colbert_scores_pairwise(queries_embeddings, documents_embeddings, backend: str | None = None) -> Tensor:
    """Matched pairs -> [B] (PyLate's ``colbert_scores_pairwise``): ``[B, Lq, d]`` and
    ``[B, Ld, d]`` tensors, or lists of ``[L_i, d]`` items (padded once here; the padding is
    excluded, since PyLate's per-pair loop never sees any)."""
    pylate_backend = _pylate_backend(backend)
    if pylate_backend is not None:
        return _PYLATE_ORIGINALS["colbert_scores_pairwise"](
            queries_embeddings, documents_embeddings, backend=pylate_backend
        )
    queries, queries_mask = _side(queries_embeddings, "queries_embeddings")
    documents, documents_mask = _side(documents_embeddings, "documents_embeddings")
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
        queries_embeddings,
        documents_embeddings,
        queries_mask: Tensor | None = None,
        documents_mask: Tensor | None = None,
        backend: str | None = None,
    ) -> Tensor:
        pylate_backend = _pylate_backend(backend)
        if pylate_backend is not None:
            return _PYLATE_ORIGINALS["ColBERTScores"]()(
                queries_embeddings, documents_embeddings, queries_mask, documents_mask, backend=pylate_backend
            )
        documents_embeddings = _as_tensor(documents_embeddings, "documents_embeddings")
        if documents_embeddings.dim() != 4:
            raise ValueError(
                "documents_embeddings must be [groups, n_docs, tokens, dim] (4-D), "
                f"got shape {list(documents_embeddings.shape)}"
            )
        flat_mask = None if documents_mask is None else _mask(documents_mask, "documents_mask").flatten(0, 1)
        return _maxsim(queries_embeddings, documents_embeddings.flatten(0, 1), queries_mask, flat_mask, self.masking)


# PyLate's own scorers, taken at import (before any patch rebinds the names): a PyLate
# backend asked for by name runs them.
_PYLATE_ORIGINALS = {} if _pylate_colbert is None else {name: getattr(_pylate_colbert, name) for name in _SCORERS}


def min_max_normalize(scores: Tensor, epsilon: float = 1e-8) -> Tensor:
    """Per-row (s - min) / (max - min + epsilon), PyLate's ``normalize_scores``, computed in
    float32 at least: PyLate 1.6.0's epsilon of 1e-8 is 0 in fp16, where a row of equal scores
    then gives 0/0 (PyLate issue #239); here it gives 0, as in float32. Such a row (no ranking to
    learn from) passes no gradient: through the epsilon it would be the upstream gradient times
    1/epsilon = 1e8, which overflows fp16 (PyLate's float32 gradient there is that 1e8-scaled
    one). Every other row has PyLate's value and gradient."""
    scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    low, high = scores.min(dim=1, keepdim=True).values, scores.max(dim=1, keepdim=True).values
    normalized = (scores - low) / (high - low + epsilon)
    return torch.where(high > low, normalized, torch.zeros_like(normalized))


def distillation_loss(scores: Tensor, labels: Tensor, normalize_scores: bool = True, size_average: bool = True,
                      temperature: float | Tensor = 1.0) -> Tensor:
    """PyLate's ``Distillation`` loss from the student's [B, K] scores and the teacher's [B, K]
    scores: KL(softmax(labels) || softmax(scores)), min-max normalising the student's scores per
    row first when ``normalize_scores`` (see :func:`min_max_normalize`: fp16 rows of equal scores
    stay finite);
    averaged over queries (``size_average``) or summed. The loss has the scores' dtype.
    ``temperature`` (kdops' extension; PyLate's loss is 1.0) gives T^2 KL(softmax(labels / T) ||
    softmax(scores / T)), as :func:`kdops.listwise_kd_loss`; a tensor may require grad."""
    dtype = scores.dtype
    if normalize_scores:
        scores = min_max_normalize(scores)
    loss = kdops.listwise_kd_loss(scores, labels.detach().to(scores.dtype), temperature,
                                  reduction="mean" if size_average else "sum")
    return loss.to(dtype)


# --- PyLate's loss modules on kdops (need PyLate) -----------------------------------------------

if _pylate_losses is not None:
    from pylate.losses.contrastive import extract_skiplist_mask

    def _model_attribute(model: torch.nn.Module, name: str):
        # A model wrapped in (D)DP keeps PyLate's attributes on .module, as PyLate's losses read them.
        return getattr(model, name) if hasattr(model, name) else getattr(model.module, name)

    class Distillation(_pylate_losses.Distillation):
        """``pylate.losses.Distillation`` with kdops' scoring (:func:`colbert_kd_scores` by
        default) and :func:`distillation_loss` (the min-max normalisation in float32, then
        KL(softmax(teacher) || softmax(student)) as one :func:`kdops.listwise_kd_loss`): the
        same constructor, call, loss and gradients, and finite where PyLate 1.6.0's fp16
        normalisation divides 0 by 0. A ``loss_function`` the user replaced runs PyLate's
        original computation with it, after a one-time warning.

        kdops' extras, keyword-only: ``temperature`` (see :func:`distillation_loss`; 1.0 is
        PyLate's loss) and ``learn_temperature=True``, which learns it with the model
        (:class:`kdops.LearnedTemperature`, starting at ``temperature``)."""

        def __init__(self, model, score_metric=None, size_average: bool = True, normalize_scores: bool = True, *,
                     temperature: float = 1.0, learn_temperature: bool = False) -> None:
            super().__init__(model, score_metric=score_metric or colbert_kd_scores, size_average=size_average,
                             normalize_scores=normalize_scores)
            self.temperature = temperature
            self.learned_temperature = learned_temperature(learn_temperature, temperature)

        def _fused_reduction(self) -> str | None:
            module = self.loss_function
            if type(module) is torch.nn.KLDivLoss and module.log_target and module.reduction in ("batchmean", "sum"):
                return module.reduction
            if not getattr(self, "_warned_not_fused", False):
                self._warned_not_fused = True
                warnings.warn(f"Distillation.loss_function was set to {module!r}, which kdops does not fuse: "
                              "running PyLate's original loss computation with it.", UserWarning, stacklevel=3)
            return None

        def forward(self, sentence_features, labels: Tensor) -> Tensor:
            reduction = self._fused_reduction()
            if reduction is None:
                return super().forward(sentence_features, labels)
            # PyLate's forward up to the scores: normalised token embeddings, the queries'
            # documents grouped per query, skiplist masks (no query mask under query expansion).
            queries = torch.nn.functional.normalize(self.model(sentence_features[0])["token_embeddings"], p=2, dim=-1)
            documents = torch.nn.functional.normalize(self.model(sentence_features[1])["token_embeddings"], p=2, dim=-1)
            documents = documents.view(queries.size(0), -1, *documents.shape[1:])
            masks = extract_skiplist_mask(sentence_features=sentence_features,
                                          skiplist=_model_attribute(self.model, "skiplist"))
            scores = self.score_metric(
                queries,
                documents,
                queries_mask=None if _model_attribute(self.model, "do_query_expansion") else masks[0],
                documents_mask=masks[1].view(queries.size(0), -1, *masks[1].shape[1:]),
            )
            temperature = self.temperature if self.learned_temperature is None else self.learned_temperature()
            return distillation_loss(scores, labels, self.normalize_scores, size_average=reduction == "batchmean",
                                     temperature=temperature)

    class Contrastive(_pylate_losses.Contrastive):
        """``pylate.losses.Contrastive`` scoring with kdops: the in-batch [Q, Q*N] score matrix
        from one fused MaxSim (:class:`ColBERTScores`) that never builds the Q x Q*N x Lq x Ld
        similarity tensor; every other argument works as in PyLate."""

        def __init__(self, model, score_metric=None, *args, **kwargs) -> None:
            super().__init__(model, score_metric or ColBERTScores(), *args, **kwargs)

    class CachedContrastive(_pylate_losses.CachedContrastive):
        """``pylate.losses.CachedContrastive`` (GradCache) scoring with kdops' :class:`ColBERTScores`."""

        def __init__(self, model, score_metric=None, *args, **kwargs) -> None:
            super().__init__(model, score_metric or ColBERTScores(), *args, **kwargs)

    _REPLACEMENTS: dict[object, object] = {
        **{_PYLATE_ORIGINALS[name]: globals()[name] for name in _SCORERS},
        _pylate_losses.Distillation: Distillation,
        _pylate_losses.Contrastive: Contrastive,
        _pylate_losses.CachedContrastive: CachedContrastive,
    }
    _patcher = Patcher("pylate", lambda: _REPLACEMENTS)


def patch() -> list[str]:
    """Run the installed PyLate on kdops: its scorers (``colbert_scores``, ``colbert_kd_scores``,
    ``colbert_scores_pairwise``, ``ColBERTScores``), hence its losses' and evaluators' default
    scoring, and its losses ``Distillation``, ``Contrastive``, ``CachedContrastive`` become
    kdops' drop-ins, under every name PyLate binds them to. ``backend="torch"|"flash"|"lik"``
    still reaches PyLate's own implementations. Idempotent; returns the ``module.attribute``
    names swapped. :func:`unpatch` restores them."""
    _require_pylate("kdops.integrations.pylate.patch()")
    return _patcher.patch()


def unpatch() -> list[str]:
    """Undo :func:`patch`; returns the names restored, empty when nothing was patched."""
    _require_pylate("kdops.integrations.pylate.unpatch()")
    return _patcher.unpatch()


def __getattr__(name: str):
    # Without PyLate the loss modules do not exist: say what is missing, not just the name.
    if name in ("Distillation", "Contrastive", "CachedContrastive"):
        _require_pylate(f"kdops.integrations.pylate.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
