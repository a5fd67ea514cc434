"""Plackett-Luce family (plackett_luce_loss, listmle, pld_loss, listwise_kd_loss) against
kdops.reference: values and gradients (hypothesis), gradcheck, opcheck, torch.compile, the
mathematical properties the papers rely on, extreme values and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kdops
from kdops import reference
from tests.helpers import assert_compiled_matches_eager, FLOAT_DTYPES, as_reference, assert_close, cuda_kernel_devices, devices, dtypes, leaf, ops

REDUCTIONS = ["mean", "sum", "none"]
SCALES = [1e-3, 1.0, 30.0, 1e4]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scores(shape, dtype, device, scale, seed, ties=False):
    """Random scores; with ties, drawn from a few levels so that equal values are common."""
    g = _gen(seed)
    if ties:
        values = torch.randint(-2, 3, shape, generator=g).double()
    else:
        values = torch.randn(shape, generator=g, dtype=torch.float64)
    return (values * scale).to(device=device, dtype=dtype)


def _lengths(batch, n, device, seed):
    """Row lengths in [0, n], the extremes included."""
    lengths = torch.randint(0, n + 1, (batch,), generator=_gen(seed))
    lengths[0] = n
    if batch > 1:
        lengths[1] = min(1, n)
    return lengths.to(device)


def _ranking(lengths, batch, n, device, seed):
    """Row b: a random permutation of 0..len_b-1, then arbitrary values (ignored) in the padding."""
    g = _gen(seed)
    rows = []
    for b in range(batch):
        length = n if lengths is None else int(lengths[b])
        garbage = torch.randint(-3, 2 * n + 3, (n - length,), generator=g)
        rows.append(torch.cat([torch.randperm(length, generator=g), garbage]))
    return torch.stack(rows).to(device)


def _check(ours_fn, ref_fn, inputs, dtype, scale, grad_seed):
    """Run kdops and the float64 reference on the same inputs; compare values and the gradients
    of every floating input that requires grad. `scale`: magnitude of the loss per row."""
    ours = [leaf(t, t.requires_grad) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    refs = [as_reference(t) if isinstance(t, torch.Tensor) else t for t in ours]
    out = ours_fn(*ours)
    expected = ref_fn(*refs)
    assert out.dtype == dtype
    assert_close(out, expected, dtype, scale=scale)
    if not any(isinstance(t, torch.Tensor) and t.requires_grad for t in ours):
        return
    upstream = torch.rand(expected.shape, generator=_gen(grad_seed), dtype=torch.float64) + 0.5
    (out * upstream.to(out)).sum().backward()
    (expected * upstream).sum().backward()
    for o, r in zip(ours, refs):
        if isinstance(r, torch.Tensor) and r.requires_grad:
            assert_close(o.grad, r.grad, dtype, scale=scale * 2)


# --- values and gradients against the reference ----------------------------------------------


@devices
@settings(max_examples=50, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    batch=st.integers(1, 12),
    n=st.integers(1, 40),
    scale=st.sampled_from(SCALES),
    ties=st.booleans(),
    weighted=st.booleans(),
    padded=st.booleans(),
    top_k=st.one_of(st.none(), st.integers(1, 45)),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_plackett_luce_matches_reference(device, dtype, batch, n, scale, ties, weighted, padded, top_k, reduction, seed):
    scores = _scores((batch, n), dtype, device, scale, seed, ties).requires_grad_()
    lengths = _lengths(batch, n, device, seed + 1) if padded else None
    ranking = _ranking(lengths, batch, n, device, seed + 2)
    weights = _scores((batch, n), dtype, device, 1.0, seed + 3).abs().requires_grad_() if weighted else None
    _check(
        lambda s, r, w: kdops.plackett_luce_loss(s, r, w, lengths, top_k, reduction),
        lambda s, r, w: reference.plackett_luce_loss(s, r, w, lengths, top_k, reduction),
        [scores, ranking, weights],
        dtype,
        scale=(scale + 1) * n * 4,
        grad_seed=seed + 4,
    )


@devices
@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    batch=st.integers(1, 12),
    n=st.integers(1, 40),
    scale=st.sampled_from(SCALES),
    graded=st.booleans(),
    padded=st.booleans(),
    top_k=st.one_of(st.none(), st.integers(1, 45)),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_listmle_matches_reference(cpu_isa, device, dtype, batch, n, scale, graded, padded, top_k, reduction, seed):
    scores = _scores((batch, n), dtype, device, scale, seed).requires_grad_()
    # Graded labels (0..3) tie often: ties go to the lower index.
    relevance = _scores((batch, n), dtype, device, 1.0, seed + 1, ties=graded)
    lengths = _lengths(batch, n, device, seed + 2) if padded else None
    _check(
        lambda s, rel: kdops.listmle(s, rel, lengths, top_k, reduction),
        lambda s, rel: reference.listmle(s, rel, lengths, top_k, reduction),
        [scores, relevance],
        dtype,
        scale=(scale + 1) * n * 4,
        grad_seed=seed + 3,
    )


@devices
@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    batch=st.integers(1, 12),
    classes=st.integers(1, 60),
    scale=st.sampled_from(SCALES),
    teacher_ties=st.booleans(),
    teacher_grad=st.booleans(),
    temperature=st.sampled_from([0.5, 1.0, 4.0]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_pld_matches_reference(cpu_isa, device, dtype, batch, classes, scale, teacher_ties, teacher_grad, temperature, reduction, seed):
    student = _scores((batch, classes), dtype, device, scale, seed).requires_grad_()
    teacher = _scores((batch, classes), dtype, device, 3.0, seed + 1, ties=teacher_ties)
    teacher.requires_grad_(teacher_grad)
    target = torch.randint(0, classes, (batch,), generator=_gen(seed + 2)).to(device)
    _check(
        lambda s, t: kdops.pld_loss(s, t, target, temperature, reduction),
        lambda s, t: reference.pld_loss(s, t, target, temperature, reduction),
        [student, teacher],
        dtype,
        scale=(scale + 1) * classes * 4,
        grad_seed=seed + 3,
    )


@devices
@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    batch=st.integers(1, 12),
    n=st.integers(1, 40),
    scale=st.sampled_from(SCALES),
    padded=st.booleans(),
    temperatures=st.sampled_from([(1.0, None, None), (2.0, None, None), (1.0, 0.5, 3.0), (4.0, 2.0, None)]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_listwise_kd_matches_reference(device, dtype, batch, n, scale, padded, temperatures, reduction, seed):
    student = _scores((batch, n), dtype, device, scale, seed).requires_grad_()
    teacher = _scores((batch, n), dtype, device, scale, seed + 1).requires_grad_()
    lengths = _lengths(batch, n, device, seed + 2) if padded else None
    t, ts, tt = temperatures
    _check(
        lambda s, te: kdops.listwise_kd_loss(s, te, t, ts, tt, lengths, reduction),
        lambda s, te: reference.listwise_kd_loss(s, te, t, ts, tt, lengths, reduction),
        [student, teacher],
        dtype,
        # Ts^2 KL grows like Ts * |scores| (the logits are divided by the temperatures).
        scale=(scale + 1) * 16 * 4,
        grad_seed=seed + 3,
    )


@devices
@pytest.mark.parametrize(
    "n,dtype",
    [(n, torch.float32) for n in (1, 2, 31, 32, 33, 63, 64, 65, 256, 257, 300, 1000, 5000)]
    # every dtype's instantiation of the warp sorts (1, 2, 4, 8 keys a lane) and of the block sort
    + [(n, dtype) for n in (20, 50, 100, 200, 300) for dtype in FLOAT_DTYPES if dtype != torch.float32],
)
def test_rows_across_the_warp_block_and_long_sorts_match_reference(cpu_isa, device, n, dtype):
    """On CUDA a row of up to 256 items is one warp's (its ranking sorted in registers, 1, 2, 4
    or 8 keys a lane, its scans warp-wide), a longer row a block's (ranking sorted in shared
    memory, rows past 4096 float keys by at::sort); the CPU sorts up to 128 keys in a sorting
    network, longer rows by radix sort: sizes either side of each switch, 9 rows (more than the 8
    warps of a block), lengths 0, 1, half and full, graded (tied) keys, a -inf key, top_k, PLD
    targets that may sit in the padding or be a full row's last item, a user's ranking with
    weights (plackett_luce_loss), and listwise KD."""
    batch = 9
    scores = _scores((batch, n), dtype, device, 1.0, n).requires_grad_()
    teacher = _scores((batch, n), dtype, device, 1.0, n + 1, ties=True)
    teacher[0, n // 2] = float("-inf")
    lengths = torch.tensor([n, 0, 1, n // 2, n, n - 1, n, (n + 1) // 2, n], device=device).clamp(min=0)
    target = torch.tensor([i * 7 % n for i in range(batch - 1)] + [n - 1], device=device)
    top_k = n // 2 + 1
    _check(
        lambda s, rel: kdops.listmle(s, rel, lengths, top_k, "none"),
        lambda s, rel: reference.listmle(s, rel, lengths, top_k, "none"),
        [scores, teacher], dtype, scale=n * 8, grad_seed=2,
    )
    _check(
        lambda s, t: kdops.pld_loss(s, t, target, 2.0, "none"),
        lambda s, t: reference.pld_loss(s, t, target, 2.0, "none"),
        [scores, teacher.clamp(min=-1e4)], dtype, scale=n * 8, grad_seed=3,
    )
    ranking = _ranking(lengths, batch, n, device, n + 2)
    weights = _scores((batch, n), dtype, device, 1.0, n + 3).abs().requires_grad_()
    _check(
        lambda s, w: kdops.plackett_luce_loss(s, ranking, w, lengths, top_k, "none"),
        lambda s, w: reference.plackett_luce_loss(s, ranking, w, lengths, top_k, "none"),
        [scores, weights], dtype, scale=n * 8, grad_seed=4,
    )
    _check(
        lambda s, t: kdops.listwise_kd_loss(s, t, student_temperature=2.0, teacher_temperature=0.5,
                                            lengths=lengths, reduction="none"),
        lambda s, t: reference.listwise_kd_loss(s, t, student_temperature=2.0, teacher_temperature=0.5,
                                                lengths=lengths, reduction="none"),
        [scores, teacher.clamp(min=-1e4).requires_grad_()], dtype, scale=n * 8, grad_seed=5,
    )


@devices
@pytest.mark.parametrize("n", [1, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 65, 100, 127, 128, 129, 300])
def test_the_rankings_the_ops_return_are_the_stable_descending_sorts(cpu_isa, device, n):
    """The ranking listmle and pld_loss return (and their backward reads) is torch.sort's, stable
    and descending, for row lengths either side of every sort's switch (the CPU's sorting networks
    take 1, 2, 4, 8 or 16 vectors of 8 keys (AVX-512) or 1 .. 32 of 4 (AVX2), up to 128; the radix
    sort beyond): graded keys that tie often, padding columns in their own places after the valid
    items."""
    batch = 6
    relevance = _scores((batch, n), torch.float32, device, 1.0, n, ties=True)
    relevance[0, n // 2] = float("-inf")
    lengths = torch.tensor([n, n, 0, 1, n // 2, max(n - 1, 0)], device=device)
    _, ranking = ops().listmle(torch.zeros_like(relevance), relevance, lengths, None, "mean")
    for b in range(batch):
        length = int(lengths[b])
        expected = torch.sort(relevance[b, :length], descending=True, stable=True).indices
        torch.testing.assert_close(ranking[b, :length], expected, rtol=0, atol=0)
        torch.testing.assert_close(ranking[b, length:], torch.arange(length, n, device=device), rtol=0, atol=0)
    target = torch.tensor([0, n - 1, n // 2, 0, n // 3, n - 1], device=device)
    _, ranking = ops().pld_loss(torch.zeros_like(relevance), relevance, target, 1.0, "mean")
    torch.testing.assert_close(ranking, reference.pld_ranking(relevance, target), rtol=0, atol=0)


# --- gradcheck, opcheck, torch.compile --------------------------------------------------------


def _fp64(*shape, device, requires_grad=True, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(device).requires_grad_(requires_grad)


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(device, reduction):
    batch, n = 5, 7
    lengths = torch.tensor([7, 3, 0, 1, 5], device=device)
    ranking, full_ranking = _ranking(lengths, batch, n, device, 0), _ranking(None, batch, n, device, 1)
    scores, weights = _fp64(batch, n, device=device), _fp64(batch, n, device=device, seed=1)
    teacher = _fp64(batch, n, device=device, seed=2)
    relevance = torch.randint(0, 3, (batch, n), generator=_gen(3)).to(device)
    target = torch.tensor([0, 6, 3, 3, 1], device=device)
    checks = [
        (lambda s, w: kdops.plackett_luce_loss(s, ranking, w, lengths, 3, reduction), (scores, weights)),
        (lambda s: kdops.plackett_luce_loss(s, full_ranking, reduction=reduction), (scores,)),
        (lambda s: kdops.listmle(s, relevance, lengths, 2, reduction), (scores,)),
        (lambda s, t: kdops.pld_loss(s, t, target, 1.5, reduction), (scores, teacher)),
        (lambda s, t: kdops.listwise_kd_loss(s, t, 1.5, None, 0.7, lengths, reduction), (scores, teacher)),
    ]
    for fn, args in checks:
        assert torch.autograd.gradcheck(fn, args)


@devices
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck(device, requires_grad, reduction):
    batch, n = 4, 6
    opts = dict(device=device, requires_grad=requires_grad)
    scores, teacher, weights = torch.randn(batch, n, **opts), torch.randn(batch, n, **opts), torch.rand(batch, n, **opts)
    lengths = torch.tensor([6, 2, 0, 4], device=device)
    ranking = _ranking(lengths, batch, n, device, 1)
    relevance = torch.randint(0, 3, (batch, n), device=device).float()
    target = torch.tensor([5, 0, 2, 2], device=device)
    namespace = ops()
    torch.library.opcheck(namespace.plackett_luce_loss.default, (scores, ranking, weights, lengths, 2, reduction))
    full_ranking = _ranking(None, batch, n, device, 2)
    torch.library.opcheck(namespace.plackett_luce_loss.default, (scores, full_ranking, None, None, None, reduction))
    torch.library.opcheck(namespace.listmle.default, (scores, relevance, lengths, None, reduction))
    torch.library.opcheck(namespace.pld_loss.default, (scores, teacher, target, 2.0, reduction))
    torch.library.opcheck(namespace.listwise_kd_loss.default, (scores, teacher, lengths, 2.0, 0.5, reduction))
    torch.library.opcheck(namespace.listwise_kd_loss.default, (scores, teacher, None, 1.0, 1.0, reduction))
    # It returns gradients, which are not differentiable: its schema, fake and dispatch only.
    torch.library.opcheck(namespace.listwise_kd_loss_and_grads.default,
                          (scores.detach(), teacher.detach(), lengths, 2.0, 0.5, reduction, requires_grad))
    torch.library.opcheck(namespace.listmle_and_grads.default, (scores.detach(), relevance, lengths, None, reduction))
    torch.library.opcheck(namespace.pld_loss_and_grads.default,
                          (scores.detach(), teacher.detach(), target, 2.0, reduction, requires_grad))


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("teacher_grad", [False, True])
@pytest.mark.parametrize("n", [40, 300])
def test_listwise_kd_loss_and_grads_is_the_forward_and_the_backward_at_a_unit_gradient(device, reduction, teacher_grad, n):
    """The op the Autograd forward runs when an input requires grad gives, bit for bit, the loss
    of listwise_kd_loss and the gradients of listwise_kd_loss_backward at an upstream gradient of
    1; the autograd gradients are those times the upstream gradient. On CUDA rows of up to 256
    items take a warp each, longer ones a block: n is on both sides."""
    student, teacher = torch.randn(9, n, device=device), torch.randn(9, n, device=device) * 3
    lengths = torch.tensor([n, 0, 1, 17, n, n - 1, 33, 2, n], device=device)
    namespace = ops()
    loss, grad_s, grad_t = namespace.listwise_kd_loss_and_grads(student, teacher, lengths, 2.0, 0.5, reduction, teacher_grad)
    assert torch.equal(loss, namespace.listwise_kd_loss(student, teacher, lengths, 2.0, 0.5, reduction))
    ones = torch.ones(loss.shape, device=device)
    want_s, want_t = namespace.listwise_kd_loss_backward(ones, student, teacher, lengths, 2.0, 0.5, reduction, teacher_grad)
    assert torch.equal(grad_s, want_s) and torch.equal(grad_t, want_t)
    assert grad_t.shape == ((9, n) if teacher_grad else (0, n))
    _check_autograd_scales_unit_grads(
        lambda s, t: kdops.listwise_kd_loss(s, t, lengths=lengths, student_temperature=2.0, teacher_temperature=0.5,
                                            reduction=reduction),
        student, teacher, teacher_grad, loss, want_s, want_t, reduction)


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("teacher_grad", [False, True])
@pytest.mark.parametrize("n", [150, 300])
def test_pld_loss_and_grads_is_the_forward_and_the_backward_at_a_unit_gradient(device, reduction, teacher_grad, n):
    """As for listwise KD: pld_loss_and_grads gives pld_loss's loss and ranking and
    pld_loss_backward's gradients at an upstream gradient of 1, bit for bit."""
    student, teacher = torch.randn(7, n, device=device), _scores((7, n), torch.float32, device, 1.0, 3, ties=True)
    target = torch.tensor([0, n - 1, 75, 3, 3, 100, 20], device=device)
    namespace = ops()
    loss, ranking, grad_s, grad_t = namespace.pld_loss_and_grads(student, teacher, target, 2.0, reduction, teacher_grad)
    want_loss, want_ranking = namespace.pld_loss(student, teacher, target, 2.0, reduction)
    assert torch.equal(loss, want_loss) and torch.equal(ranking, want_ranking)
    ones = torch.ones(loss.shape, device=device)
    want_s, want_t = namespace.pld_loss_backward(ones, student, teacher, ranking, 2.0, reduction, teacher_grad)
    assert torch.equal(grad_s, want_s) and torch.equal(grad_t, want_t)
    assert grad_t.shape == ((7, n) if teacher_grad else (0, n))
    _check_autograd_scales_unit_grads(
        lambda s, t: kdops.pld_loss(s, t, target, 2.0, reduction), student, teacher, teacher_grad, loss, want_s, want_t,
        reduction)


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n", [70, 300])
def test_listmle_and_grads_is_the_forward_and_the_backward_at_a_unit_gradient(device, reduction, n):
    """As for listwise KD: listmle_and_grads gives listmle's loss and ranking and the gradient of
    plackett_luce_loss_backward on that ranking at an upstream gradient of 1, bit for bit."""
    scores, relevance = torch.randn(9, n, device=device), _scores((9, n), torch.float32, device, 1.0, 4, ties=True)
    lengths = torch.tensor([n, 0, 1, 17, n, n - 1, 33, 2, 64], device=device)
    namespace = ops()
    loss, ranking, grad = namespace.listmle_and_grads(scores, relevance, lengths, 20, reduction)
    want_loss, want_ranking = namespace.listmle(scores, relevance, lengths, 20, reduction)
    assert torch.equal(loss, want_loss) and torch.equal(ranking, want_ranking)
    ones = torch.ones(loss.shape, device=device)
    want, _ = namespace.plackett_luce_loss_backward(ones, scores, ranking, None, lengths, 20, reduction, False)
    assert torch.equal(grad, want)
    _check_autograd_scales_unit_grads(lambda s, t: kdops.listmle(s, t, lengths, 20, reduction), scores, relevance,
                                      False, loss, want, None, reduction)


def _check_autograd_scales_unit_grads(loss_fn, student, teacher, teacher_grad, loss, unit_s, unit_t, reduction):
    """The autograd gradients of loss_fn are the unit-upstream gradients times the upstream one."""
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_(teacher_grad)
    upstream = torch.rand(loss.shape, generator=_gen(5)).to(loss.device) + 0.5
    loss_fn(s, t).backward(upstream)
    g = upstream[:, None] if reduction == "none" else upstream
    torch.testing.assert_close(s.grad, unit_s * g, rtol=0, atol=0)
    if teacher_grad:
        torch.testing.assert_close(t.grad, unit_t * g, rtol=0, atol=0)


@devices
def test_torch_compile_fullgraph(device):
    lengths = torch.tensor([6, 3, 1, 0, 5, 6, 2, 4], device=device)
    ranking = _ranking(lengths, 8, 6, device, 0)
    relevance = torch.randint(0, 3, (8, 6), device=device)
    target = torch.randint(0, 6, (8,), device=device)

    def step(scores, teacher, weights):
        return (
            kdops.plackett_luce_loss(scores, ranking, weights, lengths, top_k=3)
            + kdops.listmle(scores, relevance, lengths)
            + kdops.pld_loss(scores, teacher, target, temperature=2.0)
            + kdops.listwise_kd_loss(scores, teacher, temperature=2.0, lengths=lengths)
        )

    assert_compiled_matches_eager(step, [torch.randn(8, 6, device=device, requires_grad=True) for _ in range(3)])


# --- the properties the papers rely on --------------------------------------------------------


@devices
def test_pld_is_invariant_to_a_constant_per_row_of_student_logits(device):
    student = torch.randn(16, 50, dtype=torch.float64, device=device)
    teacher = torch.randn(16, 50, dtype=torch.float64, device=device)
    target = torch.randint(0, 50, (16,), device=device)
    shift = torch.randn(16, 1, dtype=torch.float64, device=device) * 100
    base = kdops.pld_loss(student, teacher, target, reduction="none")
    shifted = kdops.pld_loss(student + shift, teacher, target, reduction="none")
    torch.testing.assert_close(shifted, base, rtol=1e-9, atol=1e-9)


@devices
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_ranking_by_the_scores_is_the_most_likely(device, n):
    scores = torch.randn(3, n, dtype=torch.float64, device=device)
    best = scores.argsort(dim=1, descending=True)
    best_loss = kdops.plackett_luce_loss(scores, best, reduction="none")
    perms = torch.tensor(list(itertools.permutations(range(n))), device=device)
    for b in range(3):
        rows = scores[b].expand(len(perms), n)
        all_losses = kdops.plackett_luce_loss(rows, perms, reduction="none")
        assert torch.all(all_losses >= best_loss[b] - 1e-12)
        torch.testing.assert_close(all_losses.min(), best_loss[b])


@devices
def test_listmle_with_two_items_is_the_logistic_pairwise_loss(device):
    scores = torch.randn(32, 2, dtype=torch.float64, device=device) * 5
    relevance = torch.randint(0, 2, (32, 2), device=device)
    relevance[:, 1] = 1 - relevance[:, 0]  # one relevant item per row
    hi = relevance.argmax(dim=1, keepdim=True)
    s_hi, s_lo = scores.gather(1, hi), scores.gather(1, 1 - hi)
    expected = torch.log1p(torch.exp(s_lo - s_hi)).squeeze(1)
    torch.testing.assert_close(kdops.listmle(scores, relevance, reduction="none"), expected)


@devices
def test_listwise_kd_matches_the_kl_div_of_sentence_transformers(device):
    student, teacher = torch.randn(8, 20, device=device), torch.randn(8, 20, device=device)
    temperature = 2.0
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(student / temperature, -1), torch.softmax(teacher / temperature, -1), reduction="batchmean"
    ) * temperature**2
    torch.testing.assert_close(kdops.listwise_kd_loss(student, teacher, temperature), expected)


# --- semantics: padding, empty rows, extremes, determinism ------------------------------------


@devices
def test_rows_of_length_zero_add_zero_and_count_in_the_mean(device):
    scores = torch.randn(3, 4, device=device, requires_grad=True)
    lengths = torch.tensor([4, 0, 2], device=device)
    ranking = _ranking(lengths, 3, 4, device, 0)
    per_row = kdops.plackett_luce_loss(scores, ranking, lengths=lengths, reduction="none")
    assert per_row[1].item() == 0.0
    mean = kdops.plackett_luce_loss(scores, ranking, lengths=lengths)
    torch.testing.assert_close(mean, per_row.sum() / 3)
    mean.backward()
    assert torch.equal(scores.grad[1], torch.zeros(4, device=device))
    assert torch.equal(scores.grad[2, 2:], torch.zeros(2, device=device))


@devices
def test_an_empty_kd_row_adds_zero_at_any_temperature(device):
    """Found by the raw-op fuzzer: at Ts = 1e30, Ts^2 is inf in float, and an empty row's KL of 0
    times it was NaN."""
    student, teacher = torch.randn(2, 5, device=device), torch.randn(2, 5, device=device)
    lengths = torch.tensor([0, 0], device=device)
    for dtype in (torch.float32, torch.float16):
        loss = kdops.listwise_kd_loss(student.to(dtype), teacher.to(dtype), student_temperature=1e30,
                                      lengths=lengths, reduction="none")
        assert torch.equal(loss, torch.zeros(2, dtype=dtype, device=device))


@devices
def test_extreme_magnitudes_and_inf_padding_stay_finite(device):
    scores = torch.tensor([[1e4, -1e4, 3e3, float("-inf")], [-1e4, -1e4 + 1, 0.0, float("-inf")]], device=device)
    scores.requires_grad_()
    lengths = torch.tensor([3, 3], device=device)
    relevance = torch.tensor([[0, 1, 2, 3], [2, 1, 0, 3]], device=device)
    loss = kdops.listmle(scores, relevance, lengths=lengths, reduction="none")
    expected = reference.listmle(scores.detach().double(), relevance, lengths=lengths, reduction="none")
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-2)
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    teacher = torch.tensor([[5e3, -1e4, 0.0, 1e4]], device=device)
    student = torch.tensor([[1e4, -1e4, 0.0, -1e4]], device=device, requires_grad=True)
    pld = kdops.pld_loss(student, teacher, torch.tensor([1], device=device))
    pld.backward()
    assert torch.isfinite(pld) and torch.isfinite(student.grad).all()
    kd = kdops.listwise_kd_loss(scores, scores.detach() * 0.5, lengths=lengths)
    assert torch.isfinite(kd)


# The rule (with the reference): a PLD teacher row of all -inf has no softmax, so its loss and
# gradients are NaN (propagated, not hidden). The CPU kernel adopts it in the reliability work;
# until then this runs on the CUDA kernels only (simulated, and on a GPU).
@cuda_kernel_devices
def test_pld_teacher_row_of_all_minus_inf_is_nan(device):
    student = torch.randn(2, 5, device=device, requires_grad=True)
    teacher = torch.randn(2, 5, device=device)
    teacher[1] = float("-inf")
    target = torch.tensor([3, 1], device=device)
    loss = kdops.pld_loss(student, teacher, target, reduction="none")
    expected = reference.pld_loss(student.detach().double().cpu(), teacher.double().cpu(), target.cpu(), reduction="none")
    assert torch.isnan(expected[1]) and torch.isnan(loss[1]) and torch.isfinite(loss[0])
    torch.testing.assert_close(loss[0].double().cpu(), expected[0], rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    assert torch.isnan(student.grad[1]).all() and torch.isfinite(student.grad[0]).all()


@devices
def test_ranking_order_of_nan_and_signed_zero_keys_matches_torch_sort(cpu_isa, device):
    """NaN relevance ranks first (as torch.sort puts it), -0 ties +0 (lower index first)."""
    scores = torch.randn(2, 6, dtype=torch.float64, device=device)
    relevance = torch.tensor(
        [[0.0, float("nan"), -0.0, 2.0, float("nan"), -1.0], [-0.0, 0.0, float("-inf"), 0.0, 1.0, -0.0]],
        dtype=torch.float64, device=device,
    )
    ours = kdops.listmle(scores, relevance, reduction="none")
    torch.testing.assert_close(ours, reference.listmle(scores, relevance, reduction="none"))
    teacher = relevance.nan_to_num(nan=5.0).flip(1)
    target = torch.tensor([2, 5], device=device)
    torch.testing.assert_close(
        kdops.pld_loss(scores, teacher, target, reduction="none"),
        reference.pld_loss(scores, teacher, target, reduction="none"),
    )


@devices
def test_result_does_not_depend_on_the_thread_count(device):
    scores, teacher = torch.randn(300, 200, device=device), torch.randn(300, 200, device=device)
    target = torch.randint(0, 200, (300,), device=device)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kdops.pld_loss(scores, teacher, target)
        torch.set_num_threads(max(2, threads))
        many = kdops.pld_loss(scores, teacher, target)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@devices
@pytest.mark.parametrize("n, batch", [(9, 240), (300, 150)], ids=["a warp a row", "a block a row"])
def test_a_loss_reduced_over_many_blocks_is_right_call_after_call(device, n, batch):
    """The CUDA kernels reduce the rows' losses over the grid in their last block, with an arrival
    counter kept from call to call (each launch must leave it at zero): 240 rows are 30 warp
    blocks, 150 rows 150 row blocks; each call must give the reference's loss, the same bits each
    time, 'mean' and 'sum', the loss alone or with the gradients."""
    scores = _scores((batch, n), torch.float64, device, 1.0, seed=3)
    relevance = _scores((batch, n), torch.float64, device, 1.0, seed=4)
    target = torch.randint(0, n, (batch,), generator=_gen(5)).to(device)
    for reduction in ("mean", "sum"):
        expected = [reference.listmle(scores.cpu(), relevance.cpu(), reduction=reduction),
                    reference.pld_loss(scores.cpu(), relevance.cpu(), target.cpu(), reduction=reduction),
                    reference.listwise_kd_loss(scores.cpu(), relevance.cpu(), reduction=reduction)]
        calls = []
        for requires_grad in (False, True, False):
            s = leaf(scores, requires_grad)
            calls.append([kdops.listmle(s, relevance, reduction=reduction).detach(),
                          kdops.pld_loss(s, relevance, target, reduction=reduction).detach(),
                          kdops.listwise_kd_loss(s, relevance, reduction=reduction).detach()])
            for ours, ref in zip(calls[-1], expected):
                assert_close(ours.cpu(), ref, torch.float64, scale=float(ref.abs()))
        assert all(torch.equal(a, b) for a, b in zip(calls[0], calls[2]))


@dtypes
def test_output_dtype_is_input_dtype(dtype):
    scores, teacher = torch.randn(3, 5, dtype=dtype), torch.randn(3, 5, dtype=dtype)
    ranking = torch.arange(5).expand(3, 5)
    assert kdops.plackett_luce_loss(scores, ranking).dtype == dtype
    assert kdops.listmle(scores, teacher, reduction="none").dtype == dtype
    assert kdops.pld_loss(scores, teacher, torch.tensor([0, 1, 2])).dtype == dtype
    assert kdops.listwise_kd_loss(scores, teacher).dtype == dtype


def test_modules_match_functional():
    scores, teacher = torch.randn(4, 5), torch.randn(4, 5)
    ranking, target = torch.arange(5).flip(0).expand(4, 5), torch.tensor([1, 2, 3, 4])
    pairs = [
        (kdops.PlackettLuceLoss(top_k=2, reduction="sum")(scores, ranking), kdops.plackett_luce_loss(scores, ranking, top_k=2, reduction="sum")),
        (kdops.ListMLELoss()(scores, teacher), kdops.listmle(scores, teacher)),
        (kdops.PLDLoss(temperature=2.0)(scores, teacher, target), kdops.pld_loss(scores, teacher, target, 2.0)),
        (kdops.ListwiseKDLoss(2.0, teacher_temperature=1.0)(scores, teacher), kdops.listwise_kd_loss(scores, teacher, 2.0, None, 1.0)),
    ]
    for module_loss, functional_loss in pairs:
        assert torch.equal(module_loss, functional_loss)
    assert "temperature=2.0" in repr(kdops.PLDLoss(temperature=2.0))


def test_double_backward_is_refused():
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = kdops.pld_loss(scores, torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2]))
    (grad,) = torch.autograd.grad(loss, scores, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        grad.sum().backward()


# --- bad input, from the Python API and from torch.ops directly -------------------------------

_S = torch.randn(3, 4)
_PERM = torch.arange(4).expand(3, 4).contiguous()
_BAD_RANK = _PERM.clone()
_BAD_RANK[1, 2] = 0  # a repeated item
_OUT_RANK = _PERM.clone()
_OUT_RANK[2, 3] = 4  # an item past the row

BAD_PL = [
    (dict(ranking=_BAD_RANK), "ranking row 1 is not a permutation", ValueError),
    (dict(ranking=_OUT_RANK), "ranking row 2 is not a permutation", ValueError),
    (dict(ranking=_PERM.flip(1), lengths=torch.tensor([4, 2, 2])), "ranking row 1 is not a permutation", ValueError),
    (dict(ranking=_PERM.int()), "ranking must be int64", TypeError),
    (dict(ranking=_PERM[:, :3]), "ranking must have the shape of scores", ValueError),
    (dict(ranking=_PERM, lengths=torch.tensor([4, 5, 0])), "lengths must hold row lengths in \\[0, 4\\]", IndexError),
    (dict(ranking=_PERM, lengths=torch.tensor([4, -1, 0])), "lengths must hold row lengths", IndexError),
    (dict(ranking=_PERM, lengths=torch.tensor([4, 4])), "lengths must be \\[B\\]", ValueError),
    (dict(ranking=_PERM, top_k=0), "top_k must be", ValueError),
    (dict(ranking=_PERM, weights=torch.rand(3, 4, dtype=torch.float64)), "weights must have the dtype of scores", TypeError),
    (dict(ranking=_PERM, scores=torch.randn(12)), "scores must be \\[B, n\\]", ValueError),
]


@pytest.mark.parametrize("kwargs,message,error", BAD_PL)
@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_plackett_luce_input(kwargs, message, error, direct):
    a = dict(scores=_S, weights=None, lengths=None, top_k=None) | kwargs
    with pytest.raises(error, match=message):
        if direct:
            ops().plackett_luce_loss(a["scores"], a["ranking"], a["weights"], a["lengths"], a["top_k"], "mean")
        else:
            kdops.plackett_luce_loss(a["scores"], a["ranking"], a["weights"], a["lengths"], a["top_k"])


@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_pld_input(direct):
    def call(student, teacher, target, temperature=1.0):
        if direct:
            return ops().pld_loss(student, teacher, target, temperature, "mean")
        return kdops.pld_loss(student, teacher, target, temperature)

    s, t = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(IndexError, match="target must hold class indices in \\[0, 4\\]"):
        call(s, t, torch.tensor([0, 5, 1]))
    with pytest.raises(IndexError, match="target must hold class indices"):
        call(s, t, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        call(s, t, torch.tensor([0, 1, 1]), 0.0)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        call(s, t, torch.tensor([0, 1, 1]), -2.0)
    with pytest.raises(ValueError, match="teacher_logits must have the shape of student_logits"):
        call(s, torch.randn(3, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="target must be \\[B\\]"):
        call(s, t, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        call(s, t, torch.tensor([0.0, 1.0, 1.0]))


@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_listmle_and_listwise_kd_input(direct):
    s = torch.randn(3, 5)
    with pytest.raises(ValueError, match="relevance must have the shape of scores"):
        if direct:
            ops().listmle(s, torch.randn(3, 4), None, None, "mean")
        else:
            kdops.listmle(s, torch.randn(3, 4))
    with pytest.raises(ValueError, match="top_k must be"):
        if direct:
            ops().listmle(s, s, None, -1, "mean")
        else:
            kdops.listmle(s, s, top_k=-1)
    with pytest.raises(ValueError, match="teacher_temperature must be a positive finite number"):
        if direct:
            ops().listwise_kd_loss(s, s, None, 1.0, 0.0, "mean")
        else:
            kdops.listwise_kd_loss(s, s, teacher_temperature=0.0)
    with pytest.raises(IndexError, match="lengths must hold row lengths"):
        if direct:
            ops().listwise_kd_loss(s, s, torch.tensor([1, 9, 2]), 1.0, 1.0, "mean")
        else:
            kdops.listwise_kd_loss(s, s, lengths=torch.tensor([1, 9, 2]))


def test_bad_ranking_in_a_backward_op_called_directly():
    grad = torch.tensor(1.0)
    with pytest.raises(ValueError, match="ranking row 1 is not a permutation"):
        ops().pld_loss_backward(grad, torch.randn(3, 4), torch.randn(3, 4), _BAD_RANK, 1.0, "mean", True)
    with pytest.raises(ValueError, match="grad must be a scalar"):
        ops().plackett_luce_loss_backward(torch.ones(3), _S, _PERM, None, None, None, "mean", False)


def test_bad_reduction_and_types():
    with pytest.raises(ValueError, match="reduction must be one of"):
        kdops.listmle(_S, _S, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'"):
        ops().pld_loss(_S, _S, torch.tensor([0, 1, 2]), 1.0, "avg")
    with pytest.raises(TypeError, match="ranking must be a torch.Tensor"):
        kdops.plackett_luce_loss(_S, [[0, 1, 2, 3]])
    with pytest.raises(TypeError, match="scores must be a floating-point"):
        kdops.listmle(_PERM, _S)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        kdops.plackett_luce_loss(_S, _PERM, top_k=1.5)
    assert math.isfinite(kdops.plackett_luce_loss(_S, _PERM, top_k=99).item())  # clipped to n
