"""In-batch negatives across processes: each rank scores its own queries against the documents
of every rank, gathered with torch.distributed, and gradients flow back to the rank that owns
each document.

A training step on every rank (torchrun starts one process per GPU)::

    import kdops
    import kdops.distributed as kd

    docs = kd.gather_packed(D_tokens, doc_offsets)   # or kd.gather_padded(D, d_mask)
    scores = docs.maxsim(Q, q_mask)                  # [B_local, N_global]
    loss = kd.in_batch_cross_entropy(scores, docs, docs_per_query=N, scale=20.0)
    loss = loss + kd.global_mean(kdops.listwise_kd_loss(scores, teacher, reduction="none"))
    loss.backward()                                  # every rank, as DDP does

What is gathered: the documents' token embeddings (with gradient), their masks or per-doc
token counts (without), and a few integers per rank (row counts, token lengths, embedding
dim). Queries stay local. Ranks may hold different numbers of queries, documents and tokens,
or none at all.

- :func:`gather_padded` pads the token dimension to the largest across ranks (as
  sentence-transformers' ``all_gather_padded`` does) and masks the padding.
- :func:`gather_packed` gathers token rows ``[T_r, d]`` and per-document token counts and
  rebuilds the global ``doc_offsets``: the gathered tensor holds ``sum_r T_r`` rows, no padding
  token at all, and :func:`kdops.maxsim_packed` scores it directly.

Loss scaling: rank r's loss is ``W * sum(local terms) / (number of terms over all ranks)`` for
``W`` ranks (:func:`global_mean`). The gradient that reaches rank r's embeddings is then ``W``
times the gradient of the mean over the concatenated batch, and once DDP (or FSDP) averages
the parameter gradients over the ``W`` ranks they equal single-process training on the
concatenated batch, whatever the per-rank batch sizes. The losses averaged over ranks (as
trainers log them) equal the loss of the concatenated batch. With ``average_gradients=False``
the factor ``W`` is dropped: the embedding gradients are exactly those of the concatenated
batch, and parameter gradients must be summed over ranks, not averaged.

The collectives are ``all_gather_single`` (forward) and ``reduce_scatter_single`` with
SUM (backward), on the tensors' own device, so the same code runs with ``gloo`` on the CPU and
``nccl`` on GPUs. Each rank's rows travel padded to the largest rank's row count (the
collectives need equal sizes per rank; this transient buffer is ``W * max_r rows``); what is
returned, scored and kept for backward holds the real rows only. (``torch.distributed.nn``'s
``all_gather``, which sentence-transformers and PyLate use, needs equal shapes on every rank,
and torch 2.14 deprecates it.) Every rank must call these
functions in the same order and run backward, since the backward is a collective too. Without
an initialised process group they act as a single process (``W = 1``, nothing is
communicated). Not traceable by ``torch.compile`` (the per-rank sizes are read on the host).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from kdops import functional as kF
from kdops._validate import check_tensor

# torch 2.14 renamed all_gather_into_tensor / reduce_scatter_tensor (same signatures; the old
# names warn); kdops supports torch >= 2.4, which has only the old ones.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

__all__ = ["GatheredDocs", "gather_packed", "gather_padded", "gather_rows", "global_mean", "in_batch_cross_entropy"]


def _rank_and_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """(rank, world size) in ``group``; (0, 1) without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError("group was given but torch.distributed is not initialised (call init_process_group)")
        return 0, 1
    rank = dist.get_rank(group)
    if rank < 0:
        raise RuntimeError("this process is not a member of the given group")
    return rank, dist.get_world_size(group)


def _sizes_of_all_ranks(sizes: list[int], device: torch.device, group: dist.ProcessGroup | None) -> list[list[int]]:
    """Every rank's list of integers (same length everywhere), by one small all_gather."""
    _, world = _rank_and_world(group)
    if world == 1:
        return [sizes]
    local = torch.tensor(sizes, dtype=torch.int64, device=device)
    everyone = local.new_empty(world * len(sizes))
    _all_gather_single(everyone, local, group=group)
    return everyone.view(world, len(sizes)).tolist()


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    if x.shape[0] == rows:
        return x.contiguous()
    padded = x.new_zeros((rows, *x.shape[1:]))
    padded[: x.shape[0]] = x
    return padded


class _GatherRows(torch.autograd.Function):
    """Concatenate every rank's ``x`` along dim 0 (row counts may differ); backward sums the
    gradient of each rank's rows over all ranks and hands it to the owner (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: Tensor, counts: list[int], group: dist.ProcessGroup | None) -> Tensor:
        ctx.counts, ctx.group = counts, group
        rows = max(counts)
        buffer = x.new_empty((len(counts) * rows, *x.shape[1:]))
        _all_gather_single(buffer, _pad_rows(x, rows), group=group)
        if all(n == rows for n in counts):
            return buffer
        return torch.cat([buffer[r * rows : r * rows + n] for r, n in enumerate(counts)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        counts, rows = ctx.counts, max(ctx.counts)
        rank, _ = _rank_and_world(ctx.group)
        if all(n == rows for n in counts):
            buffer = grad.contiguous()
        else:
            buffer = grad.new_zeros((len(counts) * rows, *grad.shape[1:]))
            for r, piece in enumerate(grad.split(counts)):
                buffer[r * rows : r * rows + counts[r]] = piece
        mine = grad.new_empty((rows, *grad.shape[1:]))
        _reduce_scatter_single(mine, buffer, op=dist.ReduceOp.SUM, group=ctx.group)
        return mine[: counts[rank]], None, None


def gather_rows(x: Tensor, *, group: dist.ProcessGroup | None = None) -> tuple[Tensor, list[int]]:
    """Every rank's ``x`` concatenated along dim 0 in rank order, with each rank's row count.

    Ranks may hold different numbers of rows (zero included); the other dimensions, dtype and
    device must agree. When ``x`` requires grad, the gathered tensor does too, and backward
    returns to each rank the gradient of its own rows summed over all ranks' losses (see the
    module docstring for the loss scaling that makes this equal single-process training).
    """
    check_tensor(x, "x")
    if x.dim() == 0:
        raise ValueError("x must have a row dimension, got a 0-d tensor")
    _, world = _rank_and_world(group)
    if world == 1:
        return x, [x.shape[0]]
    shapes = _sizes_of_all_ranks([x.shape[0], *x.shape[1:]], x.device, group)
    if any(s[1:] != list(x.shape[1:]) for s in shapes):
        raise ValueError(f"x: every rank must have the same shape after dim 0, got per rank {[s[1:] for s in shapes]}")
    counts = [s[0] for s in shapes]
    return _GatherRows.apply(x, counts, group), counts


@dataclass(frozen=True)
class GatheredDocs:
    """Documents gathered from every rank, in rank order.

    ``docs`` is ``[N, L, d]`` with a bool ``mask [N, L]`` (padded layout; ``mask`` is None when
    no rank had a mask or padding) or ``[T, d]`` token rows with ``offsets [N + 1]`` (packed
    layout). ``counts[r]`` is the number of documents from rank r; this rank's own documents are
    rows ``start .. start + counts[rank]``.
    """

    docs: Tensor
    mask: Tensor | None
    offsets: Tensor | None
    counts: tuple[int, ...]
    rank: int
    group: dist.ProcessGroup | None = None

    @property
    def start(self) -> int:
        """Global index of this rank's first document."""
        return sum(self.counts[: self.rank])

    @property
    def num_docs(self) -> int:
        return sum(self.counts)

    def maxsim(self, Q: Tensor, q_mask: Tensor | None = None, *, length_normalize: bool = False) -> Tensor:
        """This rank's queries ``Q [B, Lq, d]`` against every gathered document -> ``[B, N]``,
        by :func:`kdops.maxsim` or :func:`kdops.maxsim_packed`."""
        if self.offsets is not None:
            return kF.maxsim_packed(Q, self.docs, self.offsets, q_mask, length_normalize=length_normalize)
        return kF.maxsim(Q, self.docs, q_mask, self.mask, length_normalize=length_normalize)


def gather_padded(D: Tensor, d_mask: Tensor | None = None, *, group: dist.ProcessGroup | None = None) -> GatheredDocs:
    """Gather padded documents ``D [N_r, L_r, d]`` (``d_mask [N_r, L_r]``, True = real token)
    from every rank. Each rank's token dimension is padded to the largest ``L_r`` (over ranks
    that hold documents) and the padding masked, as sentence-transformers does. Documents in
    the ``[B, K, L, d]`` per-query layout are flattened to ``[B * K, L, d]`` first (query-major,
    which is what :func:`in_batch_cross_entropy` expects)."""
    check_tensor(D, "D")
    if D.dim() != 3:
        raise ValueError(f"D must be [N, L, d], got shape {tuple(D.shape)} (flatten [B, K, L, d] to [B * K, L, d])")
    if d_mask is not None:
        check_tensor(d_mask, "d_mask")
        if d_mask.shape != D.shape[:2]:
            raise ValueError(f"d_mask must be [N, L] = {tuple(D.shape[:2])}, got {tuple(d_mask.shape)}")
    rank, _ = _rank_and_world(group)
    n, length, dim = D.shape
    sizes = _sizes_of_all_ranks([n, length if n else 0, dim, int(d_mask is not None)], D.device, group)
    if len({s[2] for s in sizes}) > 1:
        raise ValueError(f"D: every rank must have the same embedding dim, got per rank {[s[2] for s in sizes]}")
    counts = [s[0] for s in sizes]
    max_length = max(s[1] for s in sizes)
    needs_mask = any(s[3] for s in sizes) or any(s[1] != max_length for s in sizes if s[0])
    mask = None
    if needs_mask:
        mask = D.new_ones((n, length), dtype=torch.bool) if d_mask is None else d_mask.bool()
        mask = F.pad(mask, (0, max_length - length), value=False)
    if length != max_length:  # pads, or crops an empty rank's D (its length does not count)
        D = F.pad(D, (0, 0, 0, max_length - length))
    docs, _ = _gather_with_counts(D, counts, group)
    if mask is not None:
        mask, _ = _gather_with_counts(mask, counts, group)
    return GatheredDocs(docs, mask, None, tuple(counts), rank, group)


def gather_packed(
    D_tokens: Tensor, doc_offsets: Tensor, *, group: dist.ProcessGroup | None = None
) -> GatheredDocs:
    """Gather packed documents from every rank: token rows ``D_tokens [T_r, d]`` and
    ``doc_offsets [N_r + 1]`` (int64, from 0 to ``T_r``, non-decreasing; doc k is rows
    ``doc_offsets[k]:doc_offsets[k + 1]``). Returns ``[sum_r T_r, d]`` rows and the global
    offsets: no token is padded, whatever the ranks' lengths."""
    check_tensor(D_tokens, "D_tokens")
    check_tensor(doc_offsets, "doc_offsets")
    if D_tokens.dim() != 2:
        raise ValueError(f"D_tokens must be [T, d], got shape {tuple(D_tokens.shape)}")
    if doc_offsets.dim() != 1 or doc_offsets.numel() == 0 or doc_offsets.dtype != torch.int64:
        raise ValueError(f"doc_offsets must be a non-empty 1-d int64 tensor, got {doc_offsets.dtype} {tuple(doc_offsets.shape)}")
    lengths = doc_offsets.diff()
    if doc_offsets[0].item() != 0 or doc_offsets[-1].item() != D_tokens.shape[0] or bool((lengths < 0).any()):
        raise ValueError(f"doc_offsets must be non-decreasing from 0 to T = {D_tokens.shape[0]}, got {doc_offsets.tolist()}")
    rank, _ = _rank_and_world(group)
    tokens, dim = D_tokens.shape
    sizes = _sizes_of_all_ranks([tokens, lengths.numel(), dim], D_tokens.device, group)
    if len({s[2] for s in sizes}) > 1:
        raise ValueError(f"D_tokens: every rank must have the same embedding dim, got per rank {[s[2] for s in sizes]}")
    rows, _ = _gather_with_counts(D_tokens, [s[0] for s in sizes], group)
    all_lengths, counts = _gather_with_counts(lengths, [s[1] for s in sizes], group)
    offsets = F.pad(all_lengths.cumsum(0), (1, 0))
    return GatheredDocs(rows, None, offsets, tuple(counts), rank, group)


def _gather_with_counts(x: Tensor, counts: list[int], group: dist.ProcessGroup | None) -> tuple[Tensor, list[int]]:
    """gather_rows when the per-rank row counts are already known (no size exchange)."""
    if len(counts) == 1:
        return x, counts
    return _GatherRows.apply(x, counts, group), counts


def global_mean(
    values: Tensor,
    count: int | Tensor | None = None,
    *,
    average_gradients: bool = True,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """This rank's share of a mean over the whole global batch, scaled for gradient averaging.

    Returns ``W * values.sum() / C`` where ``C`` is ``count`` (default ``values.numel()``)
    summed over the ``W`` ranks (an all-reduce; 0 terms give 0). Pass a kdops loss with
    ``reduction="none"`` as ``values``, and, where its mean counts fewer terms than it returns
    (Margin-MSE with a mask), that count: ``(mask[:, :1] & mask[:, 1:]).sum()``.

    With ``average_gradients=True`` (DDP, FSDP) the parameter gradients averaged over ranks
    equal those of the mean over the concatenated batch, and so does the loss averaged over
    ranks. With ``False`` the factor ``W`` is dropped: summed over ranks, losses and gradients
    equal the concatenated batch's.
    """
    check_tensor(values, "values")
    _, world = _rank_and_world(group)
    local_count = values.numel() if count is None else count
    total = torch.as_tensor(local_count, dtype=torch.float64, device=values.device).detach().reshape(())
    if world > 1:
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    factor = world if average_gradients else 1
    return values.sum() * (factor / total.clamp_min(1)).to(values.dtype)


def in_batch_cross_entropy(
    scores: Tensor,
    docs: GatheredDocs,
    *,
    docs_per_query: int = 1,
    scale: float = 1.0,
    average_gradients: bool = True,
) -> Tensor:
    """Contrastive loss with in-batch negatives from every rank: cross entropy of
    ``scale * scores`` (``[B, N]``, this rank's queries against ``docs``) whose target for
    local query i is its positive, the global document ``docs.start + i * docs_per_query``.

    Each rank must gather its own queries' documents in query-major order, the positive first:
    query i's documents are local rows ``i * K .. (i + 1) * K - 1`` for ``K = docs_per_query``
    (sentence-transformers' layout). Averaged over every query of every rank by
    :func:`global_mean`, so uneven batches weigh each query the same."""
    check_tensor(scores, "scores")
    if not isinstance(docs, GatheredDocs):
        raise TypeError(f"docs must be a GatheredDocs (from gather_padded or gather_packed), got {type(docs).__name__}")
    if isinstance(docs_per_query, bool) or not isinstance(docs_per_query, int) or docs_per_query < 1:
        raise ValueError(f"docs_per_query must be a positive int, got {docs_per_query!r}")
    if scores.dim() != 2 or scores.shape[1] != docs.num_docs:
        raise ValueError(f"scores must be [B, {docs.num_docs}] (queries x gathered docs), got {tuple(scores.shape)}")
    queries = scores.shape[0]
    if queries * docs_per_query != docs.counts[docs.rank]:
        raise ValueError(
            f"this rank gathered {docs.counts[docs.rank]} docs for {queries} queries, expected "
            f"{queries} * docs_per_query = {queries * docs_per_query}"
        )
    positives = docs.start + torch.arange(queries, device=scores.device) * docs_per_query
    losses = F.cross_entropy(scores * scale, positives, reduction="none")
    return global_mean(losses, average_gradients=average_gradients, group=docs.group)
