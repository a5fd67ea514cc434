"""The non-finite rules of the README ("Non-finite inputs"), on every backend: NaN, +inf and -inf
in each floating argument, at a valid position, over a whole row, and at masked or padded
positions. Valid positions follow the float64 reference (IEEE arithmetic of each op's formula;
a NaN in gives a NaN out, except ListMLE's relevance, which only orders); masked and padded
positions are ignored (the result is the one without them)."""

from __future__ import annotations

import math

import pytest
import torch

import kdops
from kdops import reference
from tests.helpers import as_reference, devices
from tests.op_cases import OP_CASES

VALUES = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}
cases = pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
values = pytest.mark.parametrize("value", list(VALUES))
dtypes = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])

# (case, index of the floating argument) whose NaN does not reach the loss: ListMLE's relevance
# only orders the items (NaN ranks first, as torch.sort puts it).
ORDER_ONLY = {("listmle", "relevance")}


def _make(case, device, dtype, seed=11, size=9):
    args, kwargs = case.make(torch.Generator().manual_seed(seed), size, device, dtype)
    if "lengths" in kwargs:  # at least one padded column in row 0, and one valid one
        lengths = kwargs["lengths"].clone()
        n = args[0].shape[1]
        lengths[0] = max(1, min(int(lengths[0]), n - 1)) if n > 1 else 1
        kwargs["lengths"] = lengths
    return args, kwargs


def _floating(args, kwargs):
    """(name, tensor) of each floating argument, positional ones by index."""
    named = [(str(i), a) for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
    named += [(k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return named


def _set(args, kwargs, name, index, value):
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    target = args[int(name)] if name.isdigit() else kwargs[name]
    target[index] = value
    return args, kwargs


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


def _reference(case, args, kwargs):
    return _call(case.reference_fn, [as_reference(a) if isinstance(a, torch.Tensor) else a for a in args],
                 {k: as_reference(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}).detach()


def _assert_same_non_finite(out, expected):
    """Same NaN and infinity pattern; finite values close (float32 tolerance)."""
    out, expected = out.detach().double().cpu(), expected.double()
    assert torch.equal(out.isnan(), expected.isnan()), f"NaN pattern {out} vs reference {expected}"
    assert torch.equal(out.isinf() & (out > 0), expected.isinf() & (expected > 0)), f"{out} vs {expected}"
    assert torch.equal(out.isinf() & (out < 0), expected.isinf() & (expected < 0)), f"{out} vs {expected}"
    finite = out.isfinite()
    torch.testing.assert_close(out[finite], expected[finite], rtol=1e-4, atol=1e-4 * max(1.0, float(expected[finite].abs().max()) if finite.any() else 1.0))


def _valid_index(case, args, kwargs, name):
    """A position of argument `name` that takes part in the loss."""
    t = args[int(name)] if name.isdigit() else kwargs[name]
    if case.name == "margin_mse":
        mask = kwargs["mask"]
        rows = (mask[:, 0] & mask[:, 1:].any(1)).nonzero()
        b = int(rows[0])
        return (b, int(mask[b, 1:].nonzero()[0]) + 1)
    if case.name in ("maxsim", "maxsim_per_query", "maxsim_packed") and t.dim() >= 3:
        if name == "0":  # a valid query token
            q_mask = kwargs.get("q_mask")
            q, i = (0, 0) if q_mask is None else map(int, q_mask.nonzero()[0])
            return (q, i, 0)
        d_mask = kwargs["d_mask"]
        return (*map(int, d_mask.nonzero()[0]), 0)
    return (0,) * t.dim()


def _ignored_indices(case, args, kwargs, name):
    """Positions of argument `name` that take no part (masked or padding), or []."""
    t = args[int(name)] if name.isdigit() else kwargs[name]
    if case.name == "margin_mse":
        return [tuple(map(int, ix)) for ix in (~kwargs["mask"]).nonzero()[:3]]
    if case.name in ("maxsim", "maxsim_per_query") and name == "0" and kwargs.get("q_mask") is not None:
        return [(*map(int, ix), slice(None)) for ix in (~kwargs["q_mask"]).nonzero()[:3]]
    if case.name in ("maxsim", "maxsim_per_query") and name == "1":
        return [(*map(int, ix), slice(None)) for ix in (~kwargs["d_mask"]).nonzero()[:3]]
    if case.name == "maxsim_packed" and name == "0":
        return [(*map(int, ix), slice(None)) for ix in (~kwargs["q_mask"]).nonzero()[:3]]
    if "lengths" in kwargs and t.dim() == 2:
        lengths = kwargs["lengths"]
        return [(b, slice(int(lengths[b]), None)) for b in range(t.shape[0]) if int(lengths[b]) < t.shape[1]][:3]
    return []


@cases
@devices
@dtypes
@values
def test_valid_positions_follow_the_reference(case, device, dtype, value):
    args, kwargs = _make(case, device, dtype)
    for name, t in _floating(args, kwargs):
        valid = _valid_index(case, args, kwargs, name)
        for index in (valid, valid[:1]):  # one entry, then its whole row
            a, k = _set(args, kwargs, name, index, VALUES[value])
            out = _call(case.kdops_fn, a, k)
            _assert_same_non_finite(out, _reference(case, a, k))
            if value == "nan" and (case.name, "relevance" if name == "relevance" else name) not in ORDER_ONLY:
                assert out.isnan().any(), f"NaN in {name} at {index} gave {out}: a finite result"


@cases
@devices
@dtypes
@values
def test_masked_and_padded_positions_are_ignored(case, device, dtype, value):
    args, kwargs = _make(case, device, dtype)
    expected = _call(case.kdops_fn, args, kwargs)
    checked = 0
    for name, t in _floating(args, kwargs):
        for index in _ignored_indices(case, args, kwargs, name):
            a, k = _set(args, kwargs, name, index, VALUES[value])
            torch.testing.assert_close(_call(case.kdops_fn, a, k), expected, rtol=0, atol=0)
            checked += 1
    if case.name in ("pld_loss", "margin_mse_pairwise"):
        assert checked == 0  # no masks, no padding
    else:
        assert checked > 0


@devices
@pytest.mark.parametrize("row", ["all -inf", "all nan", "one +inf", "one nan"])
def test_pld_teacher_row_without_a_softmax_gives_nan(device, row):
    """A teacher row with no finite max or a NaN (a diverged teacher) never becomes uniform
    weights: that row's loss is NaN, the other rows' are untouched."""
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, generator=gen, dtype=torch.float64).to(device)
    teacher = torch.randn(3, 5, generator=gen, dtype=torch.float64).to(device)
    target = torch.tensor([1, 0, 4], device=device)
    bad = teacher.clone()
    fill = {"all -inf": -math.inf, "all nan": math.nan}.get(row)
    if fill is not None:
        bad[1] = fill
    else:
        bad[1, 2] = math.inf if row == "one +inf" else math.nan
    out = kdops.pld_loss(student, bad, target, reduction="none")
    assert out[1].isnan()
    torch.testing.assert_close(out[[0, 2]], kdops.pld_loss(student, teacher, target, reduction="none")[[0, 2]])
    assert reference.pld_loss(student.cpu(), bad.cpu(), target.cpu(), reduction="none")[1].isnan()


@devices
def test_listwise_kd_row_without_a_softmax_gives_nan(device):
    student = torch.tensor([[0.5, 1.0, -1.0], [0.2, 0.1, 0.3]], dtype=torch.float64, device=device)
    teacher = torch.tensor([[-math.inf] * 3, [0.3, 0.2, 0.1]], dtype=torch.float64, device=device)
    out = kdops.listwise_kd_loss(student, teacher, reduction="none")
    assert out[0].isnan() and out[1].isfinite()
    swapped = kdops.listwise_kd_loss(teacher, student, reduction="none")
    assert swapped[0].isnan()


@devices
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [1.0, -3.0, 0.7])
def test_tiny_temperature_on_a_one_item_row_is_finite(device, dtype, value):
    """softmax(x / T) of one item is exactly 1 for any finite x and T: at T = 1e-30 the logit
    x / T is huge, and the max item's shift x / T - max must still be exactly 0 (a product's
    rounding error left in exp(x / T - max) overflowed to inf / inf = NaN on the CPU). Listwise
    KD's loss of a one-item row is 0 and PLD's is its PL term with weight 1."""
    student = torch.tensor([[value], [0.25]], dtype=dtype, device=device)
    teacher = torch.tensor([[value * 0.5], [-2.0]], dtype=dtype, device=device)
    kd = kdops.listwise_kd_loss(student, teacher, 1e-30, reduction="none")
    expected_kd = reference.listwise_kd_loss(student.cpu(), teacher.cpu(), 1e-30, reduction="none")
    torch.testing.assert_close(kd.cpu(), expected_kd.to(dtype))
    target = torch.zeros(2, dtype=torch.long, device=device)
    pld = kdops.pld_loss(student, teacher, target, 1e-30, reduction="none")
    expected_pld = reference.pld_loss(student.cpu(), teacher.cpu(), target.cpu(), 1e-30, reduction="none")
    torch.testing.assert_close(pld.cpu(), expected_pld.to(dtype))
    assert kd.isfinite().all() and pld.isfinite().all()


@devices
def test_plackett_luce_minus_inf_rules(device):
    """-inf scores in the PL family: a -inf item ranked before a finite one has probability 0
    (the loss is +inf); a term whose remaining items are all -inf is NaN (nothing to pick from)."""
    s = torch.tensor([[-math.inf, 0.0, 1.0]], dtype=torch.float64, device=device)
    first = torch.tensor([[0, 1, 2]], device=device)
    last = torch.tensor([[1, 2, 0]], device=device)
    assert kdops.plackett_luce_loss(s, first) == math.inf
    assert kdops.plackett_luce_loss(s, last).isnan()
    assert kdops.plackett_luce_loss(s, last, top_k=2).isfinite()  # the NaN term is not counted
