"""Argument checks that need more than a shape: mask values (bool, or numbers that are exactly
0 and 1), one device for every tensor argument (meta included: a meta tensor dispatches the
whole call to the fake kernel, which must refuse a mix), and errors under
torch.compile(fullgraph=True) that name the argument."""

from __future__ import annotations

import math

import pytest
import torch

import kdops
from tests.helpers import devices, raises_value_check
from tests.op_cases import OP_CASES

cases = pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)


def _mask_calls(device):
    """(name of the mask, call(mask) -> result, a valid bool mask) for every public mask."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g).to(device), torch.randn(4, 3, generator=g).to(device)
    Q, D = torch.randn(2, 3, 4, generator=g).to(device), torch.randn(5, 6, 4, generator=g).to(device)
    tokens, offsets = torch.randn(7, 4, generator=g).to(device), torch.tensor([0, 3, 7], device=device)
    full = lambda *shape: (torch.rand(*shape, generator=g) > 0.3).to(device)  # noqa: E731
    return [
        ("mask", lambda m: kdops.margin_mse(s, t, mask=m), full(4, 3)),
        ("q_mask", lambda m: kdops.maxsim(Q, D, q_mask=m), full(2, 3)),
        ("d_mask", lambda m: kdops.maxsim(Q, D, d_mask=m), full(5, 6)),
        ("q_mask", lambda m: kdops.maxsim_packed(Q, tokens, offsets, q_mask=m), full(2, 3)),
    ]


@devices
@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32, torch.float16])
def test_masks_of_zeros_and_ones_equal_the_bool_mask(device, which, dtype):
    name, call, mask = _mask_calls(device)[which]
    torch.testing.assert_close(call(mask.to(dtype)), call(mask), rtol=0, atol=0)


@devices
@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("bad", [2, -1, 0.5, math.nan, math.inf], ids=str)
def test_mask_values_other_than_zero_and_one_are_refused_by_name(device, which, bad):
    name, call, mask = _mask_calls(device)[which]
    numbers = mask.to(torch.float32 if isinstance(bad, float) else torch.int64)
    numbers.view(-1)[1] = bad
    with raises_value_check(device, f"{name} must hold only 0 and 1"):
        call(numbers)


def _tensor_arguments(args, kwargs):
    """(label, replace(t) -> (args, kwargs)) for each tensor argument."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            out.append((i, lambda t, i=i: ([t if j == i else x for j, x in enumerate(args)], kwargs)))
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            out.append((k, lambda t, k=k: (args, {**kwargs, k: t})))
    return out


@cases
def test_a_meta_argument_beside_cpu_ones_is_refused(case):
    """Any one argument on meta (the scores included) makes the call fail with a device error,
    instead of returning uninitialised memory from the fake kernel."""
    args, kwargs = case.make(torch.Generator().manual_seed(2), 9, "cpu", torch.float32)
    for label, replace in _tensor_arguments(args, kwargs):
        a, k = replace((args[label] if isinstance(label, int) else kwargs[label]).to("meta"))
        with pytest.raises((ValueError, RuntimeError), match="device"):
            case.kdops_fn(*a, **k)


@cases
def test_all_meta_arguments_give_the_real_output_shape(case):
    args, kwargs = case.make(torch.Generator().manual_seed(2), 9, "cpu", torch.float32)
    meta = lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x  # noqa: E731
    out = case.kdops_fn(*map(meta, args), **{k: meta(v) for k, v in kwargs.items()})
    real = case.kdops_fn(*args, **kwargs)
    assert out.is_meta and out.shape == real.shape and out.dtype == real.dtype


def _compile_error(fn, *args) -> str:
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(fn, fullgraph=True)(*args)
    return str(info.value)


G = torch.Generator().manual_seed(3)
COMPILE_MISMATCHES = [
    ("teacher", lambda s, t: kdops.margin_mse(s, t), (torch.randn(4, 3, generator=G), torch.randn(4, 5, generator=G))),
    ("teacher_neg", lambda a, b, c, d: kdops.margin_mse(a, b, c, d),
     (torch.randn(4, generator=G), torch.randn(4, generator=G), torch.randn(4, generator=G), torch.randn(3, generator=G))),
    ("q_mask", lambda Q, D, m: kdops.maxsim(Q, D, m),
     (torch.randn(2, 3, 4, generator=G), torch.randn(5, 6, 4, generator=G), torch.ones(2, 4, dtype=torch.bool))),
    ("ranking", lambda s, r: kdops.plackett_luce_loss(s, r), (torch.randn(3, 5, generator=G), torch.zeros(3, 4, dtype=torch.int64))),
    ("target", lambda s, t, y: kdops.pld_loss(s, t, y),
     (torch.randn(3, 5, generator=G), torch.randn(3, 5, generator=G), torch.zeros(2, dtype=torch.int64))),
    ("lengths", lambda s, t, n: kdops.listwise_kd_loss(s, t, lengths=n),
     (torch.randn(3, 5, generator=G), torch.randn(3, 5, generator=G), torch.ones(4, dtype=torch.int64))),
]


@pytest.mark.parametrize("name,fn,args", COMPILE_MISMATCHES, ids=[c[0] for c in COMPILE_MISMATCHES])
def test_shape_mismatch_under_compile_names_the_argument_and_its_shape(name, fn, args):
    message = _compile_error(fn, *args)
    assert f"{name} must" in message and "got" in message, message
