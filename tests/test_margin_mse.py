"""Margin-MSE against kdops.reference: values and gradients (hypothesis), gradcheck, opcheck,
torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kdops
from kdops import reference
from tests.helpers import assert_compiled_matches_eager, FLOAT_DTYPES, as_reference, assert_close, devices, dtypes, leaf, ops

REDUCTIONS = ["mean", "sum", "none"]


def _scores(shape, dtype, device, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _check_against_reference(inputs, call, grad_seed, dtype, scale):
    """Run `call` on kdops and on the float64 reference; compare values and all gradients."""
    ours = [leaf(t) if t is not None and t.is_floating_point() else t for t in inputs]
    refs = [as_reference(t) for t in ours]
    out = call(kdops.margin_mse, ours)
    expected = call(reference.margin_mse, refs)
    # The loss is quadratic in the scores: its magnitude (and so its rounding) grows with scale^2.
    assert_close(out, expected, dtype, scale=scale**2)
    upstream = _scores(expected.shape, torch.float64, "cpu", 1.0, grad_seed) + 1.5
    (out * upstream.to(out)).sum().backward()
    (expected * upstream).sum().backward()
    for ours_t, ref_t in zip(ours, refs):
        if ref_t is not None and ref_t.requires_grad:
            assert_close(ours_t.grad, ref_t.grad, dtype, scale=scale * upstream.abs().max().item() * 4)


@devices
@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    batch=st.integers(1, 70),
    negatives=st.one_of(st.integers(1, 9), st.integers(15, 40)),  # one and several 16-wide vectors
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    masked=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_multi_negative_matches_reference(cpu_isa, device, dtype, batch, negatives, scale, masked, reduction, seed):
    shape = (batch, negatives + 1)
    student = _scores(shape, dtype, device, scale, seed)
    teacher = _scores(shape, dtype, device, scale, seed + 1)
    mask = None
    if masked:
        mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 2)) > 0.3
        mask = mask.to(device)
    _check_against_reference(
        [student, teacher, mask],
        lambda f, t: f(t[0], t[1], mask=t[2], reduction=reduction),
        seed + 3,
        dtype,
        scale,
    )


@devices
@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(FLOAT_DTYPES),
    batch=st.integers(1, 200),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_pairwise_matches_reference(device, dtype, batch, scale, reduction, seed):
    scores = [_scores((batch,), dtype, device, scale, seed + i) for i in range(4)]
    _check_against_reference(scores, lambda f, t: f(*t, reduction=reduction), seed + 4, dtype, scale)


@devices
def test_pairwise_equals_multi_negative_with_one_negative(device):
    sp, sn, tp, tn = (torch.randn(33, device=device) for _ in range(4))
    pairwise = kdops.margin_mse(sp, sn, tp, tn, reduction="none")
    multi = kdops.margin_mse(torch.stack([sp, sn], 1), torch.stack([tp, tn], 1), reduction="none")
    torch.testing.assert_close(pairwise, multi[:, 0])


@devices
def test_mask_drops_terms_and_mean_counts_only_valid(device):
    student = torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.0, 5.0]], device=device)
    teacher = torch.zeros_like(student)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]], device=device)  # row 1 has no positive
    # Only term (0, 1) counts: margin 3 - 1 = 2 against the teacher's 0.
    assert kdops.margin_mse(student, teacher, mask=mask).item() == 4.0
    assert kdops.margin_mse(student, teacher, mask=mask, reduction="none").tolist() == [[4.0, 0.0], [0.0, 0.0]]


@devices
def test_all_masked_mean_is_zero_with_zero_gradient(device):
    student = torch.randn(4, 3, device=device, requires_grad=True)
    loss = kdops.margin_mse(student, torch.randn(4, 3, device=device), mask=torch.zeros(4, 3, dtype=torch.bool, device=device))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student))


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(device, reduction):
    opts = dict(dtype=torch.float64, device=device, requires_grad=True)
    student, teacher = torch.randn(6, 5, **opts), torch.randn(6, 5, **opts)
    mask = torch.rand(6, 5, device=device) > 0.25
    assert torch.autograd.gradcheck(lambda s, t: kdops.margin_mse(s, t, mask=mask, reduction=reduction), (student, teacher))
    pairs = [torch.randn(9, **opts) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda *a: kdops.margin_mse(*a, reduction=reduction), pairs)


@devices
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck(device, requires_grad, reduction):
    opts = dict(device=device, requires_grad=requires_grad)
    student, teacher = torch.randn(5, 4, **opts), torch.randn(5, 4, **opts)
    mask = torch.rand(5, 4, device=device) > 0.5
    torch.library.opcheck(ops().margin_mse.default, (student, teacher, mask, reduction))
    torch.library.opcheck(ops().margin_mse.default, (student, teacher, None, reduction))
    pairs = [torch.randn(7, **opts) for _ in range(4)]
    torch.library.opcheck(ops().margin_mse_pairwise.default, (*pairs, reduction))


@devices
def test_torch_compile_fullgraph(device):
    def step(student, teacher, mask, sp, sn, tp, tn):
        return kdops.margin_mse(student, teacher, mask=mask) + kdops.margin_mse(sp, sn, tp, tn)

    args = [torch.randn(8, 4, device=device, requires_grad=True), torch.randn(8, 4, device=device), torch.rand(8, 4, device=device) > 0.3]
    args += [torch.randn(8, device=device, requires_grad=True) for _ in range(4)]
    assert_compiled_matches_eager(step, args)


@dtypes
def test_output_dtype_is_input_dtype(dtype):
    student, teacher = torch.randn(3, 4, dtype=dtype), torch.randn(3, 4, dtype=dtype)
    assert kdops.margin_mse(student, teacher).dtype == dtype
    assert kdops.margin_mse(student, teacher, reduction="none").dtype == dtype


def test_module_matches_functional():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    loss = kdops.MarginMSELoss(reduction="sum")
    assert torch.equal(loss(student, teacher), kdops.margin_mse(student, teacher, reduction="sum"))
    assert "sum" in repr(loss)


def test_double_backward_is_refused():
    student = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = kdops.margin_mse(student, torch.randn(3, 4, dtype=torch.float64))
    (grad,) = torch.autograd.grad(loss, student, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        grad.sum().backward()


BAD_MULTI = [
    ((torch.randn(4),), "student must be \\[B, 1\\+N\\]", ValueError),
    ((torch.randn(4, 1),), "at least one negative", ValueError),
    ((torch.randn(0, 3),), "at least one row", ValueError),
    ((torch.randn(4, 3), torch.randn(4, 4)), "teacher must have the shape of student", ValueError),
    ((torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)), "teacher must have the dtype of student", TypeError),
    ((torch.randint(0, 3, (4, 3)), torch.randint(0, 3, (4, 3))), "student must be a floating-point", TypeError),
]


@pytest.mark.parametrize("args,message,error", BAD_MULTI)
@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_multi_negative_input(args, message, error, direct):
    student = args[0]
    teacher = args[1] if len(args) > 1 else torch.randn_like(student, dtype=torch.float32)
    with pytest.raises(error, match=message):
        if direct:
            ops().margin_mse(student, teacher, None, "mean")
        else:
            kdops.margin_mse(student, teacher)


@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_mask_shape(direct):
    student, teacher, mask = torch.randn(4, 3), torch.randn(4, 3), torch.ones(4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask must have the shape of student"):
        if direct:
            ops().margin_mse(student, teacher, mask, "mean")
        else:
            kdops.margin_mse(student, teacher, mask=mask)


@pytest.mark.parametrize("direct", [False, True], ids=["api", "torch.ops"])
def test_bad_pairwise_input(direct):
    call = (lambda *a: ops().margin_mse_pairwise(*a, "mean")) if direct else kdops.margin_mse
    with pytest.raises(ValueError, match="teacher_neg must have the shape of student_pos"):
        call(torch.randn(4), torch.randn(4), torch.randn(4), torch.randn(5))
    with pytest.raises(ValueError, match="student_pos must be \\[B\\]"):
        call(torch.randn(4, 1), torch.randn(4, 1), torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match="empty batch"):
        call(*(torch.randn(0) for _ in range(4)))


def test_bad_reduction_and_arity():
    with pytest.raises(ValueError, match="reduction must be one of"):
        kdops.margin_mse(torch.randn(4, 3), torch.randn(4, 3), reduction="avg")
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'"):
        ops().margin_mse(torch.randn(4, 3), torch.randn(4, 3), None, "avg")
    with pytest.raises(TypeError, match="got 3 positional arguments"):
        kdops.margin_mse(torch.randn(4), torch.randn(4), torch.randn(4))
    with pytest.raises(TypeError, match="teacher must be a torch.Tensor"):
        kdops.margin_mse(torch.randn(4, 3), [1.0, 2.0])
    with pytest.raises(ValueError, match="mask is only accepted"):
        kdops.margin_mse(*(torch.randn(4) for _ in range(4)), mask=torch.ones(4))
