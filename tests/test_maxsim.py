"""MaxSim against kdops.reference: the three layouts (all pairs, per-query candidates, packed)
with masks, ties and non-contiguous inputs (hypothesis), gradients of Q and D, gradcheck,
opcheck, torch.compile and bad input."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kdops
from kdops import reference
from tests.conftest import CPU_ISAS, cpu_has
from tests.helpers import assert_compiled_matches_eager, FLOAT_DTYPES, HALF_DTYPES, as_reference, assert_close, cuda_kernel_devices, devices, dtypes, leaf, on_simulator, ops, raises_value_check, sim_schedule

ROOT = Path(__file__).resolve().parents[1]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _embeddings(shape, dtype, device, seed, integer=False):
    """Random token embeddings; integer-valued ones (exact in every dtype) make ties common."""
    g = _generator(seed)
    x = torch.randint(-2, 3, shape, generator=g).double() if integer else torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype)


def _mask(shape, device, seed, keep):
    """Random bool mask with P(True) = keep; keep = 0 masks everything."""
    return (torch.rand(shape, generator=_generator(seed)) < keep).to(device)


def _score_dtype(dtype):
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _check_against_reference(ours_fn, ref_fn, Q, D, seed, dtype):
    """Scores and the gradients of Q and D (for a random upstream gradient) against the float64
    reference run on the same (rounded) inputs."""
    Q, D = leaf(Q), leaf(D)
    Qr, Dr = as_reference(Q), as_reference(D)
    out = ours_fn(Q, D)
    expected = ref_fn(Qr, Dr)
    assert out.dtype == _score_dtype(dtype)
    lq, dim = Q.shape[1], Q.shape[2]
    # A score sums Lq dot products over d features, accumulated in the score dtype.
    assert_close(out, expected, _score_dtype(dtype), scale=max(1, lq * dim))
    upstream = torch.rand(expected.shape, generator=_generator(seed), dtype=torch.float64) + 0.5
    (out * upstream.to(out)).sum().backward()
    (expected * upstream).sum().backward()
    # A gradient row sums at most (number of scores) terms g * embedding.
    terms = max(1, expected.numel())
    assert Q.grad.dtype == dtype and D.grad.dtype == dtype
    assert_close(Q.grad, Qr.grad, dtype, scale=2 * terms)
    assert_close(D.grad, Dr.grad, dtype, scale=2 * terms)


mask_keep = st.sampled_from([None, 0.0, 0.5, 0.9])
shared = dict(
    dtype=st.sampled_from(FLOAT_DTYPES),
    nq=st.integers(1, 4),
    lq=st.integers(1, 9),
    dim=st.sampled_from([1, 3, 8, 33]),
    q_keep=mask_keep,
    integer=st.booleans(),
    length_normalize=st.booleans(),
    seed=st.integers(0, 2**16),
)


@devices
@settings(max_examples=50, deadline=None)
@given(nd=st.integers(1, 6), ld=st.integers(1, 12), d_keep=mask_keep, **shared)
def test_all_pairs_matches_reference(cpu_isa, device, dtype, nq, lq, dim, q_keep, integer, length_normalize, seed, nd, ld, d_keep):
    Q = _embeddings((nq, lq, dim), dtype, device, seed, integer)
    D = _embeddings((nd, ld, dim), dtype, device, seed + 1, integer)
    q_mask = None if q_keep is None else _mask((nq, lq), device, seed + 2, q_keep)
    d_mask = None if d_keep is None else _mask((nd, ld), device, seed + 3, d_keep)
    _check_against_reference(
        lambda q, d: kdops.maxsim(q, d, q_mask, d_mask, length_normalize=length_normalize),
        lambda q, d: reference.maxsim(q, d, as_reference(q_mask), as_reference(d_mask), length_normalize=length_normalize),
        Q, D, seed + 4, dtype,
    )


@devices
@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 5), ld=st.integers(1, 12), d_keep=mask_keep, **shared)
def test_per_query_matches_reference(cpu_isa, device, dtype, nq, lq, dim, q_keep, integer, length_normalize, seed, k, ld, d_keep):
    Q = _embeddings((nq, lq, dim), dtype, device, seed, integer)
    D = _embeddings((nq, k, ld, dim), dtype, device, seed + 1, integer)
    q_mask = None if q_keep is None else _mask((nq, lq), device, seed + 2, q_keep)
    d_mask = None if d_keep is None else _mask((nq, k, ld), device, seed + 3, d_keep)
    _check_against_reference(
        lambda q, d: kdops.maxsim(q, d, q_mask, d_mask, length_normalize=length_normalize),
        lambda q, d: reference.maxsim(q, d, as_reference(q_mask), as_reference(d_mask), length_normalize=length_normalize),
        Q, D, seed + 4, dtype,
    )


def _offsets(lengths, device):
    return torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0).to(device)


@devices
@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(0, 14), min_size=1, max_size=6), **shared)
def test_packed_matches_reference(cpu_isa, device, dtype, nq, lq, dim, q_keep, integer, length_normalize, seed, lengths):
    Q = _embeddings((nq, lq, dim), dtype, device, seed, integer)
    D_tokens = _embeddings((sum(lengths), dim), dtype, device, seed + 1, integer)
    offsets = _offsets(lengths, device)
    q_mask = None if q_keep is None else _mask((nq, lq), device, seed + 2, q_keep)
    _check_against_reference(
        lambda q, d: kdops.maxsim_packed(q, d, offsets, q_mask, length_normalize=length_normalize),
        lambda q, d: reference.maxsim_packed(q, d, offsets.cpu(), as_reference(q_mask), length_normalize=length_normalize),
        Q, D_tokens, seed + 4, dtype,
    )


@devices
@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 20), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_packed_equals_padded(device, lengths, seed):
    """Packed docs score and differentiate exactly like the same docs padded and masked."""
    Q = leaf(_embeddings((3, 7, 16), torch.float32, device, seed))
    D_tokens = leaf(_embeddings((sum(lengths), 16), torch.float32, device, seed + 1))
    offsets = _offsets(lengths, device)
    D, d_mask = reference.pad_packed(D_tokens.detach(), offsets)
    D = leaf(D)
    Q2 = leaf(Q)
    packed = kdops.maxsim_packed(Q, D_tokens, offsets)
    padded = kdops.maxsim(Q2, D, None, d_mask)
    torch.testing.assert_close(packed, padded)
    upstream = torch.rand(packed.shape, generator=_generator(seed), device=device)
    (packed * upstream).sum().backward()
    (padded * upstream).sum().backward()
    torch.testing.assert_close(Q.grad, Q2.grad)
    torch.testing.assert_close(D_tokens.grad, D.grad[d_mask])
    assert torch.all(D.grad[~d_mask] == 0)


@devices
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
def test_only_the_gradients_asked_for(layout, device):
    """Frozen docs (or queries): backward computes one gradient, equal to the one of a full pass."""
    Q = torch.randn(3, 5, 8, device=device)
    D = {"all-pairs": (4, 6, 8), "per-query": (3, 2, 6, 8), "packed": (9, 8)}[layout]
    D = torch.randn(D, device=device)
    offsets = torch.tensor([0, 2, 9], device=device) if layout == "packed" else None

    def run(q, d):
        return kdops.maxsim_packed(q, d, offsets) if offsets is not None else kdops.maxsim(q, d)

    full_q, full_d = leaf(Q), leaf(D)
    run(full_q, full_d).sum().backward()
    only_q, only_d = leaf(Q), leaf(D)
    run(only_q, D).sum().backward()
    run(Q, only_d).sum().backward()
    assert torch.equal(only_q.grad, full_q.grad) and torch.equal(only_d.grad, full_d.grad)
    argmax = ops().maxsim(Q, D, None, None, offsets, False)[1]
    grads = ops().maxsim_backward(torch.ones(argmax.shape[:2], device=device), argmax, Q, D, None, offsets, False, True, False)
    assert grads[0].shape == Q.shape and grads[1].shape == (0,)


def _layout_args(layout, dtype, device, seed, masked):
    """Raw-op arguments (Q, D, q_mask, d_mask, doc_offsets) of one layout; d = 40 and docs of up
    to 70 tokens cross the tensor-core kernel's tile and fragment edges."""
    Q = _embeddings((3, 9, 40), dtype, device, seed)
    q_mask = _mask((3, 9), device, seed + 1, 0.7) if masked else None
    if layout == "packed":
        return Q, _embeddings((83, 40), dtype, device, seed + 2), q_mask, None, _offsets([70, 0, 13], device)
    shape = (4, 70) if layout == "all-pairs" else (3, 2, 70)
    d_mask = _mask(shape, device, seed + 3, 0.8) if masked else None
    return Q, _embeddings((*shape, 40), dtype, device, seed + 2), q_mask, d_mask, None


@devices
@dtypes
@pytest.mark.parametrize("masked", [False, True], ids=["no-masks", "masks"])
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
def test_scores_without_argmax_equal_scores_with_it(device, dtype, masked, layout):
    """with_argmax=False (inference) runs the kernels that write no index: the same scores, bit
    for bit, and an empty int32 [0] in place of the argmax."""
    args = _layout_args(layout, dtype, device, 7, masked)
    for length_normalize in (False, True):
        scores, argmax = ops().maxsim(*args, length_normalize, True)
        scores_only, none = ops().maxsim(*args, length_normalize, False)
        assert torch.equal(scores_only, scores)
        assert argmax.shape == (3, scores.shape[1], 9)
        assert none.shape == (0,) and none.dtype == torch.int32 and none.device == scores.device


@devices
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
def test_without_argmax_autograd_still_records_it(device, layout):
    """A raw call with with_argmax=False that records a backward still gets its gradients (the
    autograd kernel computes the argmax for itself) and returns the argmax as [0]; the same call
    without grad mode records nothing."""
    Q, D, q_mask, d_mask, offsets = _layout_args(layout, torch.float64, device, 3, True)
    upstream = torch.rand(3, 4 if layout == "all-pairs" else (2 if layout == "per-query" else 3), dtype=torch.float64,
                          generator=_generator(5)).to(device)
    grads = []
    for with_argmax in (True, False):
        q, d = leaf(Q), leaf(D)
        scores, argmax = ops().maxsim(q, d, q_mask, d_mask, offsets, True, with_argmax)
        assert argmax.shape == ((3, upstream.shape[1], 9) if with_argmax else (0,))
        (scores * upstream).sum().backward()
        grads.append((q.grad, d.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    with torch.no_grad():
        scores, argmax = ops().maxsim(leaf(Q), leaf(D), q_mask, d_mask, offsets, True, False)
    assert scores.grad_fn is None and argmax.shape == (0,)


@devices
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("with_argmax", [False, True], ids=["scores-only", "argmax"])
def test_half_nan_and_minus_inf_maxima_with_and_without_argmax(device, dtype, with_argmax):
    """The fold's special values on the fp16/bf16 kernels (tensor cores on CUDA), in the
    score-only kernel and the one that writes the argmax: a NaN doc token (second tile, the second
    column of a lane's pair) makes every row's max NaN, the first NaN token its argmax; a NaN
    token masked out takes no part; a doc whose one valid token has similarity -inf with every
    query token adds -inf (not the 0 of a doc with no valid token, which adds 0), and that token
    is the argmax, not a masked one before it (tokens 66, 67, 74 share a lane's columns with 75)."""
    g = _generator(41)
    Q = (torch.rand(2, 5, 16, generator=g) + 0.5).to(dtype)  # positive: a -inf feature gives -inf
    D = torch.randn(4, 100, 16, generator=g).to(dtype)
    d_mask = torch.ones(4, 100, dtype=torch.bool)
    D[0, 73, 3] = D[0, 90, 5] = float("nan")  # doc 0: first NaN at token 73
    D[1, 9, 0] = float("nan")
    d_mask[1, 9] = False  # doc 1: its NaN masked out
    d_mask[2] = False
    d_mask[2, 75] = True
    D[2, 75, 0] = -float("inf")  # doc 2: one valid token, similarity -inf, after masked ones in its lane's columns
    d_mask[3] = False  # doc 3: no valid token
    scores, argmax = ops().maxsim(Q.to(device), D.to(device), None, d_mask.to(device), None, False, with_argmax)
    scores = scores.cpu()
    expected = reference.maxsim(as_reference(Q), as_reference(D), None, d_mask)
    assert torch.isnan(scores[:, 0]).all() and torch.isfinite(scores[:, 1]).all()
    assert torch.equal(scores[:, 2], torch.full((2,), -float("inf"))) and torch.equal(scores[:, 3], torch.zeros(2))
    assert torch.isnan(expected[:, 0]).all()
    assert_close(scores[:, 1:], expected[:, 1:], torch.float32, scale=5 * 16)
    if with_argmax:
        argmax = argmax.cpu()
        assert (argmax[:, 0] == 73).all() and (argmax[:, 2] == 75).all() and (argmax[:, 3] == -1).all()
        assert (argmax[:, 1] != 9).all()


@devices
def test_ties_take_the_first_maximal_doc_token(cpu_isa, device):
    # Doc tokens 0 and 2 are equal and both maximal for the query token: only token 0 wins.
    Q = torch.tensor([[[1.0, 0.0]]], device=device, requires_grad=True)
    D = torch.tensor([[[2.0, 1.0], [1.0, 0.0], [2.0, 1.0]]], device=device, requires_grad=True)
    score = kdops.maxsim(Q, D)
    score.backward()
    assert score.item() == 2.0
    assert D.grad.tolist() == [[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
    # Masking the first one hands the tie to the other.
    D.grad = None
    kdops.maxsim(Q, D, None, torch.tensor([[False, True, True]], device=device)).backward()
    assert D.grad.tolist() == [[[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]]


@devices
def test_nan_similarity_propagates_unless_masked(cpu_isa, device):
    """A NaN doc token makes the max NaN, as in the reference (not silently skipped), wherever it
    stands in the doc; masked, it takes no part."""
    Q = torch.randn(2, 3, 4, device=device)
    D = torch.randn(3, 5, 4, device=device)
    D[0, 3, 1] = float("nan")
    D[1, 0, 2] = float("nan")
    d_mask = torch.ones(3, 5, dtype=torch.bool, device=device)
    scores = kdops.maxsim(Q, D)
    torch.testing.assert_close(scores, reference.maxsim(Q, D), equal_nan=True)
    assert torch.isnan(scores[:, :2]).all() and not torch.isnan(scores[:, 2]).any()
    d_mask[0, 3] = d_mask[1, 0] = False
    masked = kdops.maxsim(Q, D, None, d_mask)
    assert not torch.isnan(masked).any()
    torch.testing.assert_close(masked, reference.maxsim(Q, D, None, d_mask))


@devices
def test_masked_queries_and_docs_add_zero_and_get_no_gradient(cpu_isa, device):
    Q = torch.randn(2, 4, 8, device=device, requires_grad=True)
    D = torch.randn(3, 5, 8, device=device, requires_grad=True)
    q_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], device=device)  # 0/1 numbers are accepted
    d_mask = torch.ones(3, 5, dtype=torch.bool, device=device)
    d_mask[1] = False
    scores = kdops.maxsim(Q, D, q_mask, d_mask, length_normalize=True)
    scores.sum().backward()
    assert torch.all(scores[1] == 0) and torch.all(scores[:, 1] == 0)  # no NaN from 0 / 0
    assert torch.all(Q.grad[0, 2:] == 0) and torch.all(Q.grad[1] == 0)
    assert torch.all(D.grad[1] == 0)
    expected = reference.maxsim(Q, D, q_mask, d_mask, length_normalize=True)
    torch.testing.assert_close(scores, expected)


@devices
def test_non_contiguous_inputs(cpu_isa, device):
    Q = torch.randn(16, 9, 3, device=device).permute(2, 1, 0)  # [3, 9, 16], not contiguous
    D = torch.randn(5, 22, 16, device=device)[:, ::2]  # [5, 11, 16], strided
    D4 = torch.randn(16, 4, 3, 6, device=device).permute(2, 1, 3, 0)  # [3, 4, 6, 16]
    d_mask = (torch.rand(11, 5, device=device) > 0.3).t()
    assert not (Q.is_contiguous() or D.is_contiguous() or D4.is_contiguous() or d_mask.is_contiguous())
    torch.testing.assert_close(kdops.maxsim(Q, D, None, d_mask), kdops.maxsim(Q.contiguous(), D.contiguous(), None, d_mask.contiguous()))
    torch.testing.assert_close(kdops.maxsim(Q, D4), reference.maxsim(Q, D4))
    tokens = torch.randn(16, 30, device=device).t()
    offsets = torch.tensor([0, 10, 30], device=device)
    torch.testing.assert_close(kdops.maxsim_packed(Q, tokens, offsets), kdops.maxsim_packed(Q, tokens.contiguous(), offsets))


@devices
def test_large_shapes_cross_work_item_and_chunk_boundaries(cpu_isa, device):
    """Long queries (more rows than one CPU work item), many long docs (several token chunks)."""
    g = _generator(0)
    Q = torch.randn(3, 300, 16, generator=g).to(device)
    D = torch.randn(24, 400, 16, generator=g).to(device)
    d_mask = (torch.rand(24, 400, generator=g) > 0.1).to(device)
    Q, D = leaf(Q), leaf(D)
    _check_against_reference(
        lambda q, d: kdops.maxsim(q, d, None, d_mask),
        lambda q, d: reference.maxsim(q, d, None, d_mask.cpu()),
        Q, D, 1, torch.float32,
    )


# The reranking layouts at a size that crosses every boundary of the CPU kernel's doc stream:
# work items (13 docs of 300 tokens each), token blocks (127 tokens at d = 129), 4-token tiles
# (46 = 11 x 4 + 2 in a doc's last block), query panels (33 rows: 32 + 1 on AVX-512, 16 + 16 + 1
# on AVX2); d odd. Packed lengths include 0 and block-sized docs.
RERANK_DIM, RERANK_LQ = 129, 33
RERANK_LENGTHS = [300, 0, 5, 127, 128, 0, 259, 1, 300, 254, 3, 0, 4, 299, 131] * 2


def _reranking_docs(layout, device, dtype, seed, masked):
    """(D, d_mask or offsets) of one query's 30 candidates in `layout`; masked: a random fifth
    of the doc tokens dropped, doc 3 entirely, doc 5 all but its last token."""
    if layout == "packed":
        tokens = _embeddings((sum(RERANK_LENGTHS), RERANK_DIM), dtype, device, seed, integer=True)
        return tokens, _offsets(RERANK_LENGTHS, device)
    D = _embeddings((30, 300, RERANK_DIM), dtype, device, seed, integer=True)
    d_mask = None
    if masked:
        d_mask = _mask((30, 300), device, seed + 1, 0.8)
        d_mask[3] = False
        d_mask[5, :-1] = False
        d_mask[5, -1] = True
    if layout == "per-query":
        D = D.unsqueeze(0)
        d_mask = None if d_mask is None else d_mask.unsqueeze(0)
    return D, d_mask


@devices
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-masks", "masks"])
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
def test_reranking_layouts_cross_items_blocks_and_tiles(cpu_isa, device, dtype, masked, layout):
    """One query against 30 candidates (integer embeddings: ties everywhere, so the argmax, which
    the gradients read, must be the first maximal token), against the float64 reference."""
    Q = _embeddings((1, RERANK_LQ, RERANK_DIM), dtype, device, 11, integer=True)
    q_mask = _mask((1, RERANK_LQ), device, 12, 0.8) if masked else None
    D, extra = _reranking_docs(layout, device, dtype, 13, masked)
    if layout == "packed":
        ours = lambda q, d: kdops.maxsim_packed(q, d, extra, q_mask)  # noqa: E731
        ref = lambda q, d: reference.maxsim_packed(q, d, extra.cpu(), as_reference(q_mask))  # noqa: E731
    else:
        ours = lambda q, d: kdops.maxsim(q, d, q_mask, extra)  # noqa: E731
        ref = lambda q, d: reference.maxsim(q, d, as_reference(q_mask), as_reference(extra))  # noqa: E731
    _check_against_reference(ours, ref, Q, D, 14, dtype)


@pytest.mark.parametrize("device", ["cpu"], indirect=True)
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
def test_reranking_forward_is_the_same_on_any_thread_count(cpu_isa, device, layout):
    """The docs are split among threads in whole work items: the same scores and argmax, bit for
    bit, on 1 and 2 threads."""
    Q = _embeddings((1, RERANK_LQ, RERANK_DIM), torch.float32, "cpu", 21)
    D, extra = _reranking_docs(layout, "cpu", torch.float32, 22, True)
    d_mask, offsets = (None, extra) if layout == "packed" else (extra, None)
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(torch.ops.kdops.maxsim(Q, D, None, d_mask, offsets, False))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_cpu_forward_reads_nothing_past_its_inputs():
    """Q, D and d_mask each end at an inaccessible page (tests/guard_page_worker.py, in its own
    process): the CPU forward's reads, on every ISA path, stay inside them (its prefetches of the
    doc rows ahead run past D's end, which a prefetch may)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("KDOPS_CPU_ISA", None)
    proc = subprocess.run([sys.executable, "-m", "tests.guard_page_worker"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), (proc.returncode, proc.stderr[-3000:])


@devices
@dtypes
@pytest.mark.parametrize("dim", [1, 7, 64, 96, 128, 256])
def test_wide_embeddings_and_tile_edges(cpu_isa, device, dtype, dim):
    """d up to 256 (on CUDA, tiles past the default 48 KiB of shared memory) with query and doc
    lengths that end mid-tile."""
    g = _generator(dim)
    Q = _embeddings((2, 41, dim), dtype, device, dim)
    D = _embeddings((3, 70, dim), dtype, device, dim + 1)
    d_mask = (torch.rand(3, 70, generator=g) > 0.2).to(device)
    _check_against_reference(
        lambda q, d: kdops.maxsim(q, d, None, d_mask),
        lambda q, d: reference.maxsim(q, d, None, d_mask.cpu()),
        Q, D, 2, dtype,
    )


def test_cpu_isa_override_refuses_unknown_or_missing_paths(monkeypatch):
    Q, D = torch.randn(1, 2, 3), torch.randn(1, 4, 3)
    monkeypatch.setenv("KDOPS_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="KDOPS_CPU_ISA=sse9 is not one of generic, avx2, avx512"):
        kdops.maxsim(Q, D)
    missing = [isa for isa in CPU_ISAS if not cpu_has(isa)]
    for isa in missing:
        monkeypatch.setenv("KDOPS_CPU_ISA", isa)
        with pytest.raises(RuntimeError, match=f"lacks the {isa} instructions"):
            kdops.maxsim(Q, D)
    assert cpu_has("generic")  # the portable path runs everywhere


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fma_paths_are_bit_identical(dtype, monkeypatch):
    """AVX2 and AVX-512 sum each similarity over d in the same order with FMAs: the same bits and
    argmax for any panel width; the generic path (no forced FMA) agrees within rounding."""
    have = [isa for isa in CPU_ISAS if cpu_has(isa)]
    Q = _embeddings((3, 37, 96), dtype, "cpu", 5)
    D = _embeddings((5, 53, 96), dtype, "cpu", 6)
    d_mask = _mask((5, 53), "cpu", 7, 0.8)
    out = {}
    for isa in have:
        monkeypatch.setenv("KDOPS_CPU_ISA", isa)
        out[isa] = torch.ops.kdops.maxsim(Q, D, None, d_mask, None, False)
    fma = [isa for isa in have if isa != "generic"]
    for isa in fma[1:]:
        assert torch.equal(out[isa][0], out[fma[0]][0]) and torch.equal(out[isa][1], out[fma[0]][1])
    for isa in have:
        torch.testing.assert_close(out[isa][0], out["generic"][0])


@devices
def test_empty_sizes(device):
    Q = torch.randn(2, 3, 4, device=device, requires_grad=True)
    assert kdops.maxsim(Q, torch.randn(0, 5, 4, device=device)).shape == (2, 0)
    assert torch.all(kdops.maxsim(Q, torch.randn(3, 0, 4, device=device)) == 0)
    no_tokens = torch.randn(2, 0, 4, device=device, requires_grad=True)
    scores = kdops.maxsim(no_tokens, torch.randn(3, 5, 4, device=device), length_normalize=True)
    assert scores.shape == (2, 3) and torch.all(scores == 0)
    empty_docs = kdops.maxsim_packed(Q, torch.randn(0, 4, device=device), torch.zeros(3, dtype=torch.int64, device=device))
    assert empty_docs.shape == (2, 2) and torch.all(empty_docs == 0)


@devices
@pytest.mark.parametrize("length_normalize", [False, True])
def test_gradcheck(device, length_normalize):
    opts = dict(dtype=torch.float64, device=device, requires_grad=True)
    Q = torch.randn(3, 4, 5, **opts)
    q_mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool, device=device)
    D3, D4 = torch.randn(4, 6, 5, **opts), torch.randn(3, 2, 6, 5, **opts)
    d_mask3 = torch.rand(4, 6, device=device) > 0.3
    d_mask4 = torch.rand(3, 2, 6, device=device) > 0.3
    tokens, offsets = torch.randn(11, 5, **opts), torch.tensor([0, 4, 4, 11], device=device)
    ln = dict(length_normalize=length_normalize)
    assert torch.autograd.gradcheck(lambda q, d: kdops.maxsim(q, d, q_mask, d_mask3, **ln), (Q, D3))
    assert torch.autograd.gradcheck(lambda q, d: kdops.maxsim(q, d, q_mask, d_mask4, **ln), (Q, D4))
    assert torch.autograd.gradcheck(lambda q, d: kdops.maxsim_packed(q, d, offsets, q_mask, **ln), (Q, tokens))


@devices
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    opts = dict(device=device, requires_grad=requires_grad)
    Q = torch.randn(2, 5, 8, **opts)
    q_mask = torch.rand(2, 5, device=device) > 0.3
    op = ops().maxsim.default
    D3 = torch.randn(3, 6, 8, **opts)
    torch.library.opcheck(op, (Q, D3, q_mask, torch.rand(3, 6, device=device) > 0.3, None, True))
    torch.library.opcheck(op, (Q, D3, None, None, None, False))
    torch.library.opcheck(op, (Q, torch.randn(2, 4, 6, 8, **opts), None, torch.rand(2, 4, 6, device=device) > 0.3, None, False))
    offsets = torch.tensor([0, 3, 3, 9], device=device)
    torch.library.opcheck(op, (Q, torch.randn(9, 8, **opts), q_mask, None, offsets, False))
    frozen_docs = torch.randn(3, 6, 8, device=device)
    torch.library.opcheck(op, (Q, frozen_docs, None, None, None, False))
    # Inference (no argmax returned), also while autograd records a backward.
    torch.library.opcheck(op, (Q, D3, q_mask, None, None, True, False))
    torch.library.opcheck(op, (Q, torch.randn(9, 8, **opts), q_mask, None, offsets, False, False))


@devices
def test_torch_compile_fullgraph(device):
    def step(Q, D, q_mask, d_mask, tokens, offsets):
        padded = kdops.maxsim(Q, D, q_mask, d_mask, length_normalize=True)
        return padded.sum() + kdops.maxsim_packed(Q, tokens, offsets, q_mask).sum()

    args = [
        torch.randn(3, 5, 8, device=device, requires_grad=True),
        torch.randn(4, 6, 8, device=device, requires_grad=True),
        torch.rand(3, 5, device=device) > 0.2,
        torch.rand(4, 6, device=device) > 0.2,
        torch.randn(10, 8, device=device, requires_grad=True),
        torch.tensor([0, 2, 7, 10], device=device),
    ]
    assert_compiled_matches_eager(step, args)


@dtypes
def test_score_and_gradient_dtypes(dtype):
    Q = torch.randn(2, 3, 4, dtype=dtype, requires_grad=True)
    D = torch.randn(5, 6, 4, dtype=dtype, requires_grad=True)
    scores = kdops.maxsim(Q, D)
    assert scores.dtype == _score_dtype(dtype)
    scores.sum().backward()
    assert Q.grad.dtype == dtype and D.grad.dtype == dtype


def test_module_matches_functional():
    Q, D = torch.randn(2, 3, 4), torch.randn(5, 6, 4)
    q_mask = torch.rand(2, 3) > 0.3
    module = kdops.MaxSim(length_normalize=True)
    assert torch.equal(module(Q, D, q_mask), kdops.maxsim(Q, D, q_mask, length_normalize=True))
    tokens, offsets = torch.randn(7, 4), torch.tensor([0, 3, 7])
    assert torch.equal(module(Q, tokens, doc_offsets=offsets), kdops.maxsim_packed(Q, tokens, offsets, length_normalize=True))
    assert "length_normalize=True" in repr(module)
    with pytest.raises(ValueError, match="d_mask is not accepted"):
        module(Q, tokens, d_mask=torch.ones(7, dtype=torch.bool), doc_offsets=offsets)


def test_double_backward_is_refused():
    Q = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    scores = kdops.maxsim(Q, torch.randn(5, 6, 4, dtype=torch.float64))
    (grad,) = torch.autograd.grad(scores.sum(), Q, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        grad.sum().backward()


def test_backward_is_deterministic():
    Q = torch.randn(8, 16, 32, requires_grad=True)
    D = torch.randn(20, 40, 32, requires_grad=True)
    grads = [torch.autograd.grad(kdops.maxsim(Q, D).sum(), (Q, D)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*grads))


Q_ = torch.randn(2, 3, 4)
BAD = [
    (dict(Q=torch.randn(3, 4)), "Q must be \\[Nq, Lq, d\\]", ValueError),
    (dict(D=torch.randn(5, 6, 7)), "D must have the embedding size d = 4", ValueError),
    (dict(D=torch.randn(5, 4)), "D must be \\[Nd, Ld, d\\]", ValueError),
    (dict(D=torch.randn(3, 2, 6, 4)), "D must be \\[Nq, K, Ld, d\\] with Nq = 2", ValueError),
    (dict(D=torch.randn(5, 6, 4, dtype=torch.float64)), "D must have the dtype of Q", TypeError),
    (dict(Q=torch.randint(0, 3, (2, 3, 4))), "Q must be a floating-point", TypeError),
    (dict(q_mask=torch.ones(2, 4, dtype=torch.bool)), "q_mask must be \\[Nq, Lq\\]", ValueError),
    (dict(d_mask=torch.ones(5, 7, dtype=torch.bool)), "d_mask must be D.shape\\[:-1\\]", ValueError),
]


def _call(direct, Q=None, D=None, q_mask=None, d_mask=None):
    Q = Q_ if Q is None else Q
    D = torch.randn(5, 6, 4) if D is None else D
    if direct:
        return ops().maxsim(Q, D, q_mask, d_mask, None, False)
    return kdops.maxsim(Q, D, q_mask, d_mask)


@pytest.mark.parametrize("kwargs,message,error", BAD)
@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_input(kwargs, message, error, direct):
    with pytest.raises(error, match=message):
        _call(direct, **kwargs)


BAD_OFFSETS = [
    (torch.tensor([0, 4, 2, 6]), "doc_offsets must be non-decreasing, got offsets\\[1\\] = 4 > offsets\\[2\\] = 2", ValueError),
    (torch.tensor([1, 3, 6]), "doc_offsets must start at 0", ValueError),
    (torch.tensor([0, 3, 7]), "doc_offsets must end at the number of tokens T = 6", ValueError),
    (torch.tensor([0, 3, 6], dtype=torch.int32), "doc_offsets must be int64", TypeError),
    (torch.tensor([[0, 3, 6]]), "doc_offsets must be \\[Nd \\+ 1\\]", ValueError),
]


@pytest.mark.parametrize("offsets,message,error", BAD_OFFSETS)
@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_doc_offsets(offsets, message, error, direct):
    tokens = torch.randn(6, 4)
    with pytest.raises(error, match=message):
        if direct:
            ops().maxsim(Q_, tokens, None, None, offsets, False)
        else:
            kdops.maxsim_packed(Q_, tokens, offsets)


# Bad offset values (each a ValueError on the CPU, with its own message above).
BAD_OFFSET_VALUES = [o for o, _, error in BAD_OFFSETS if error is ValueError and o.dim() == 1] + [
    torch.tensor([0, 7, 6]), torch.tensor([0, -1, 6]), torch.tensor([6]), torch.tensor([0, 3, 6, 5, 6]),
]
# On the CUDA kernels one device-side assert covers every condition (no host read).
DEVICE_OFFSETS_MESSAGE = ("doc_offsets must start at 0, end at the number of tokens T = 6 \\(D_tokens.shape\\[0\\]\\), "
                          "be non-decreasing and hold no doc of 2\\^31 tokens or more")


@devices
@pytest.mark.parametrize("offsets", BAD_OFFSET_VALUES, ids=lambda o: str(o.tolist()))
def test_bad_doc_offset_values_raise_on_every_backend(device, offsets):
    """Forward (public and raw) and backward refuse bad offsets: the CPU by reading them, the
    CUDA kernels by a device-side assert naming doc_offsets."""
    Q, tokens, offsets = Q_.to(device), torch.randn(6, 4, device=device), offsets.to(device)
    message = DEVICE_OFFSETS_MESSAGE if on_simulator() else "doc_offsets must (start at 0|end at|be non-decreasing)"
    with raises_value_check(device, message):
        kdops.maxsim_packed(Q, tokens, offsets)
    with raises_value_check(device, message):
        ops().maxsim(Q, tokens, None, None, offsets, False, False)
    columns = offsets.shape[0] - 1
    with raises_value_check(device, message):
        ops().maxsim_backward(torch.ones(2, columns, device=device), torch.zeros(2, columns, 3, dtype=torch.int32, device=device),
                              Q, tokens, None, offsets, False, True, True)


def test_bad_packed_arguments():
    with pytest.raises(ValueError, match="d_mask is not accepted with doc_offsets"):
        ops().maxsim(Q_, torch.randn(6, 4), None, torch.ones(6, dtype=torch.bool), torch.tensor([0, 6]), False)
    with pytest.raises(ValueError, match="D_tokens must be \\[T, d\\]"):
        kdops.maxsim_packed(Q_, torch.randn(1, 6, 4), torch.tensor([0, 6]))
    with pytest.raises(TypeError, match="doc_offsets must be a torch.Tensor"):
        kdops.maxsim_packed(Q_, torch.randn(6, 4), [0, 6])
    with pytest.raises(TypeError, match="length_normalize must be a bool"):
        kdops.maxsim(Q_, torch.randn(5, 6, 4), length_normalize=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mixed_devices():
    with pytest.raises(ValueError, match="D must be on the device of Q"):
        kdops.maxsim(Q_.cuda(), torch.randn(5, 6, 4))
    with pytest.raises(ValueError, match="q_mask must be on the device of Q"):
        kdops.maxsim(Q_.cuda(), torch.randn(5, 6, 4).cuda(), torch.ones(2, 3, dtype=torch.bool))


def _first_argmax(Q, D_docs, q_mask, d_mask_docs):
    """argmax[q, k, i] of the float64 similarities: the first maximal valid doc token, -1 for a
    masked query token or a doc without valid tokens. D_docs[q][k] is doc k of query q [L, d]."""
    nq, lq = Q.shape[:2]
    out = torch.full((nq, len(D_docs[0]), lq), -1, dtype=torch.int32)
    for q in range(nq):
        for k, doc in enumerate(D_docs[q]):
            sims = Q[q].double() @ doc.double().T
            valid = d_mask_docs[q][k]
            sims[:, ~valid] = float("-inf")
            for i in range(lq):
                if valid.any() and (q_mask is None or q_mask[q, i]):
                    out[q, k, i] = int(torch.argmax(sims[i]))  # first maximal index
    return out


@devices
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("nq,lq", [(5, 10), (2, 70)], ids=["5-queries-per-block", "query-over-64-rows"])
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
@pytest.mark.parametrize("aligned", [False, True], ids=["plain-loads", "cp-async"])
def test_tiles_query_groups_and_ties_across_tiles(device, dtype, nq, lq, layout, aligned):
    """The tile edges of the CUDA tensor-core kernel (fp16/bf16): up to four queries share a block
    of 64 query rows (Nq = 5 leaves a partial group), a query of 70 tokens takes two row chunks,
    docs of 150 tokens take three 64-token tiles (both doc buffers, one reused), d = 40 is no
    multiple of 16, and Q starts one element past a 16-byte boundary (plain loads) or on it
    (16-byte loads; doc tiles by cp.async). Doc tokens repeat with period 7, so every
    max is tied across tiles and column parities: the saved argmax must be the first maximal
    valid token, and scores and gradients exact (integer embeddings)."""
    dim, ld = 40, 150
    g = _generator(nq * lq)
    base = torch.randint(-2, 3, (nq, lq, dim), generator=g).to(dtype)
    Q = torch.empty(base.numel() + 1, dtype=dtype)[int(not aligned):][:base.numel()].view(base.shape).copy_(base).to(device)
    q_mask = (torch.rand(nq, lq, generator=g) < 0.9).to(device)
    period = torch.randint(-2, 3, (7, dim), generator=g).to(dtype)
    if layout == "packed":
        lengths = [150, 3, 0, 77]
        D = period[torch.arange(sum(lengths)) % 7].to(device)
        offsets = _offsets(lengths, device)
        docs = [[D[o:o + n].cpu() for o, n in zip(offsets[:-1].tolist(), lengths)]] * nq
        valid = [[torch.ones(n, dtype=torch.bool) for n in lengths]] * nq
        run = lambda q, d: kdops.maxsim_packed(q, d, offsets, q_mask)  # noqa: E731
        ref = lambda q, d: reference.maxsim_packed(q, d, offsets.cpu(), as_reference(q_mask))  # noqa: E731
        raw = ops().maxsim(Q, D, q_mask, None, offsets, False)
    else:
        shape = (3, ld) if layout == "all-pairs" else (nq, 2, ld)
        D = period[torch.arange(ld) % 7].expand(*shape, dim).contiguous().to(device)
        d_mask = (torch.rand(shape, generator=g) < 0.8).to(device)
        Dc, mc = D.cpu(), d_mask.cpu()
        docs = [list(Dc) if layout == "all-pairs" else list(Dc[q]) for q in range(nq)]
        valid = [list(mc) if layout == "all-pairs" else list(mc[q]) for q in range(nq)]
        run = lambda q, d: kdops.maxsim(q, d, q_mask, d_mask)  # noqa: E731
        ref = lambda q, d: reference.maxsim(q, d, as_reference(q_mask), as_reference(d_mask))  # noqa: E731
        raw = ops().maxsim(Q, D, q_mask, d_mask, None, False)
    expected_argmax = _first_argmax(Q.cpu(), docs, q_mask.cpu(), valid)
    assert torch.equal(raw[1].cpu(), expected_argmax)
    _check_against_reference(run, ref, Q, D, 3, dtype)


def _unaligned(x: torch.Tensor, shift: int) -> torch.Tensor:
    """A contiguous copy of x whose data starts `shift` elements past a 16-byte boundary."""
    buffer = torch.empty(x.numel() + shift, dtype=x.dtype, device=x.device)
    return buffer[shift:].view(x.shape).copy_(x)


def _layout_case(layout, nq, lq, dim, dtype, device, seed, columns=9, ld=11):
    """Integer embeddings (exact in every dtype, ties common), masks, and the op and reference
    of one layout with `columns` docs per query (packed: docs of uneven lengths, one empty)."""
    g = _generator(seed)
    Q = torch.randint(-2, 3, (nq, lq, dim), generator=g).to(device=device, dtype=dtype)
    q_mask = (torch.rand(nq, lq, generator=g) < 0.8).to(device)
    if layout == "packed":
        lengths = [(3 * c + 1) % (ld + 1) for c in range(columns)]
        D = torch.randint(-2, 3, (sum(lengths), dim), generator=g).to(device=device, dtype=dtype)
        offsets = _offsets(lengths, device)
        run = lambda q, d: kdops.maxsim_packed(q, d, offsets, q_mask)  # noqa: E731
        ref = lambda q, d: reference.maxsim_packed(q, d, offsets.cpu(), as_reference(q_mask))  # noqa: E731
        return Q, D, run, ref
    shape = (columns, ld) if layout == "all-pairs" else (nq, columns, ld)
    D = torch.randint(-2, 3, (*shape, dim), generator=g).to(device=device, dtype=dtype)
    d_mask = (torch.rand(shape, generator=g) < 0.8).to(device)
    run = lambda q, d: kdops.maxsim(q, d, q_mask, d_mask)  # noqa: E731
    ref = lambda q, d: reference.maxsim(q, d, as_reference(q_mask), as_reference(d_mask))  # noqa: E731
    return Q, D, run, ref


@devices
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
@pytest.mark.parametrize("dim,shift", [(16, 0), (200, 0), (24, 1), (7, 0)],
                         ids=["16-byte-loads", "two-passes", "unaligned-D", "d-not-multiple-of-8"])
def test_query_gradient_load_paths(device, dtype, layout, dim, shift):
    """dQ's paths on the CUDA kernels: 16-byte loads of D rows with 2 to 32 lanes per query
    token (d = 16: 1 to 8 loads a row; d = 200: 25 to 100, two passes of 32 lanes for fp32 and
    fp64), and element loads where D starts off a 16-byte boundary or d is no multiple of the
    loads' width. 9 columns: a partial batch of 4 loads in flight, and more columns than lanes
    per row; 7 query tokens: groups of rows past the last one."""
    Q, D, run, ref = _layout_case(layout, 2, 7, dim, dtype, device, dim + shift)
    _check_against_reference(run, ref, Q, _unaligned(D, shift) if shift else D, 5, dtype)


def _skewed(nq, lq, dim, device, dtype=torch.float64, seed=7, hot=5):
    """Positive queries and a doc whose token `hot` is all ones and the others in [-1, 1]: it
    is every query token's unique argmax, one row group gets all Nq * Lq hits of the doc."""
    g = _generator(seed)
    Q = (torch.rand(nq, lq, dim, generator=g, dtype=torch.float64) + 0.5).to(device=device, dtype=dtype)
    D = (torch.rand(2, 20, dim, generator=g, dtype=torch.float64) * 2 - 1)
    D[:, hot] = 1.0
    return Q, D.to(device=device, dtype=dtype)


@devices
@pytest.mark.parametrize("layout", ["all-pairs", "per-query", "packed"])
def test_hot_doc_rows_split_match_reference(device, layout):
    """dD of a doc token every query token picks, past the hot threshold (256 hits): all pairs
    and packed with 15 x 37 = 555 entries per doc (3 parts, boundaries inside a query), per query
    with Lq = 300 (2 parts). The hot groups are split; the other groups of a doc (no hits) are
    done whole by part 0; doc 1 is hot at token 13 when packed, random embeddings in all pairs."""
    nq, lq = (1, 300) if layout == "per-query" else (15, 37)
    Q, D = _skewed(nq, lq, 8, device)
    if layout == "per-query":
        D4 = D[None].contiguous()
        _check_against_reference(kdops.maxsim, reference.maxsim, Q, D4, 1, torch.float64)
    elif layout == "packed":
        D[1, 5], D[1, 13] = 0.0, 1.0
        offsets = _offsets([20, 20], device)
        _check_against_reference(lambda q, d: kdops.maxsim_packed(q, d, offsets),
                                 lambda q, d: reference.maxsim_packed(q, d, offsets.cpu()), Q, D.view(40, 8), 1,
                                 torch.float64)
    else:
        D[1] = _embeddings((20, 8), torch.float64, device, 3)
        _check_against_reference(kdops.maxsim, reference.maxsim, Q, D, 1, torch.float64)


@devices
def test_hot_doc_rows_gradcheck(device):
    """gradcheck through the split dD and dQ (fast mode: the sim runs the op once per probe)."""
    Q, D = _skewed(15, 37, 3, device)
    Q, D = Q.requires_grad_(), D.requires_grad_()
    d_mask = torch.ones(2, 20, dtype=torch.bool, device=device)
    d_mask[1, 5] = False
    assert torch.autograd.gradcheck(lambda q, d: kdops.maxsim(q, d, None, d_mask), (Q, D), fast_mode=True)


@cuda_kernel_devices
def test_hot_doc_rows_are_bit_identical_across_schedules(device):
    """The split sums in fixed parts added in a fixed order: random fp32 data (rounding that
    depends on the order) gives the same bits under every schedule of the simulator."""
    Q, D = _skewed(15, 37, 24, device, torch.float32)
    grads = []
    for threads, seed in [("in_order", 0), ("random", 1), ("run_ahead", 2), ("pct", 3)]:
        with sim_schedule(threads, seed) if on_simulator() else contextlib.nullcontext():
            q, d = leaf(Q), leaf(D)
            (kdops.maxsim(q, d) * torch.linspace(0.5, 1.5, 30, device=device).view(15, 2)).sum().backward()
            grads.append((q.grad, d.grad))
    assert all(torch.equal(a, b) for g in grads[1:] for a, b in zip(grads[0], g))


def _two_hot_rows(dtype, device):
    """15 queries of 37 tokens (555 entries per doc: 2 slots of packed partials per doc, 3 parts)
    against 3 docs of 20 tokens: doc 0 is the argmax of the even query tokens at token 2 (285
    hits) and of the odd ones at token 13 (270), two hot groups, ranks 0 and 1; doc 1 of every
    token at 17 (555 hits, group 2, rank 0: its group 1 is cold); doc 2 random (no hot group)."""
    g = _generator(11)
    Q = torch.rand(15, 37, 8, generator=g, dtype=torch.float64) + 0.5
    Q[:, 0::2, 0] += 10.0
    Q[:, 1::2, 1] += 10.0
    D = torch.rand(3, 20, 8, generator=g, dtype=torch.float64) * 2 - 1
    D[0, 2] = torch.tensor([5.0, 1, 1, 1, 1, 1, 1, 1])
    D[0, 13] = torch.tensor([1.0, 5, 1, 1, 1, 1, 1, 1])
    D[1, 17] = 5.0
    return Q.to(device=device, dtype=dtype), D.to(device=device, dtype=dtype)


@devices
def test_packed_partials_of_hot_groups_in_several_docs(device):
    """The hot groups' partials are packed into slots per doc by the group's rank among its doc's
    hot groups: two hot groups in one doc (distinct slots) and one in another (the next doc's
    first slot, each part strided past every doc's slots) give the reference's dD, the cold rows
    between them included."""
    Q, D = _two_hot_rows(torch.float64, device)
    _check_against_reference(kdops.maxsim, reference.maxsim, Q, D, 2, torch.float64)


@cuda_kernel_devices
def test_packed_partials_are_bit_identical_across_schedules(device):
    """fp32 sums of the packed slots, added part by part: the same bits under every schedule."""
    Q, D = _two_hot_rows(torch.float32, device)
    grads = []
    for threads, seed in [("in_order", 0), ("random", 1), ("run_ahead", 2), ("pct", 3)]:
        with sim_schedule(threads, seed) if on_simulator() else contextlib.nullcontext():
            q, d = leaf(Q), leaf(D)
            (kdops.maxsim(q, d) * torch.linspace(0.5, 1.5, 45, device=device).view(15, 3)).sum().backward()
            grads.append((q.grad, d.grad))
    assert all(torch.equal(a, b) for g in grads[1:] for a, b in zip(grads[0], g))


@pytest.mark.sim
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["fp16", "bf16"])
def test_long_queries_split_over_blocks_give_the_unsplit_bits(dtype):
    """A query longer than one block's 64 rows (Lq = 200: 4 chunks of rows) on the simulated small
    device (2 SMs): against 4 docs the 8 (query, doc) blocks fill it (no split, 1 launch); against
    2 docs each block takes 2 chunks (8 blocks), against 1 doc 1 chunk (8 blocks), and the chunk
    sum adds their partial sums (2 launches). Every score and argmax is the same bits all three
    ways, under every schedule, and the scores match the float64 reference (masks, a doc that ends
    inside its first tile, one with no valid token)."""
    from kdops.ops import built_with_simulator

    if not built_with_simulator():
        pytest.skip("needs kdops._C_sim")
    from kdops import _C_sim
    from tests.helpers import sim_schedule

    g = _generator(27)
    Q = torch.randn(2, 200, 32, generator=g).to(dtype)
    D = torch.randn(4, 70, 32, generator=g).to(dtype)
    q_mask = torch.rand(2, 200, generator=g) > 0.1
    d_mask = torch.rand(4, 70, generator=g) > 0.2
    d_mask[1, 40:] = False  # ends inside the first tile
    d_mask[3] = False  # no valid token: adds 0

    def forward(docs: slice, launches: int):
        before = _C_sim.launch_count()
        out = torch.ops.kdops_sim.maxsim(Q, D[docs], q_mask, d_mask[docs], None, False, True)
        assert _C_sim.launch_count() - before == launches, docs
        return out

    _C_sim.set_device("small")
    try:
        runs = []
        for threads, seed in (("in_order", 0), ("run_ahead", 2), ("pct", 4)):
            with sim_schedule(threads, seed) if seed else contextlib.nullcontext():
                whole = forward(slice(0, 4), 1)
                for width in (2, 1):
                    parts = [forward(slice(j, j + width), 2) for j in range(0, 4, width)]
                    assert torch.equal(torch.cat([p[0] for p in parts], 1), whole[0]), width
                    assert torch.equal(torch.cat([p[1] for p in parts], 1), whole[1]), width
            runs.append(whole)
        assert all(torch.equal(s, runs[0][0]) and torch.equal(a, runs[0][1]) for s, a in runs)
    finally:
        _C_sim.set_device("h100")
    scores = runs[0][0]
    expected = reference.maxsim(as_reference(Q), as_reference(D), q_mask, d_mask)
    assert_close(scores, expected, torch.float32, scale=200 * 32)
    assert torch.equal(scores[:, 3], torch.zeros(2))


@pytest.mark.sim
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("dim", [96, 200])
def test_half_inputs_too_wide_for_the_tensor_core_tiles_run_on_cuda_cores(dtype, dim):
    """fp16/bf16 tiles of d features take 256 rows x (d rounded up to 16, + 8) x 2 bytes: on the
    simulated small device (48 KiB a block) d <= 88. d = 96 runs the SIMT forward in fp32, all
    features in one shared-memory chunk, d = 200 in two (191 + 9); scores, argmax-driven
    gradients and masks as on the tensor cores."""
    from kdops.ops import built_with_simulator

    if not built_with_simulator():
        pytest.skip("needs kdops._C_sim")
    from kdops import _C_sim
    from tests.helpers import simulated

    Q = _embeddings((2, 41, dim), dtype, "cpu", dim)
    D = _embeddings((3, 70, dim), dtype, "cpu", dim + 1)
    d_mask = _mask((3, 70), "cpu", dim, 0.8)
    _C_sim.set_device("small")
    try:
        with simulated():
            _check_against_reference(
                lambda q, d: kdops.maxsim(q, d, None, d_mask),
                lambda q, d: reference.maxsim(q, d, None, d_mask),
                Q, D, 4, dtype,
            )
    finally:
        _C_sim.set_device("h100")
