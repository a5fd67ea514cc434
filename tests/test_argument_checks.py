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


# --- dtypes: one accepted set on every backend, the others refused by name (issue #30) ----------

NOT_SCORE_DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64, torch.int32, torch.bool]


def _score_calls(device, dtype):
    """(name of the scores argument, call) of every public op, its scores in `dtype` (the
    other float tensors too, so only the dtype itself is wrong)."""
    g = torch.Generator().manual_seed(0)
    f = lambda *shape: torch.randn(*shape, generator=g).to(device).to(dtype)  # noqa: E731
    ranking = torch.tensor([[0, 1, 2], [2, 1, 0]], device=device)
    target = torch.tensor([0, 2], device=device)
    return [
        ("student", lambda: kdops.margin_mse(f(2, 3), f(2, 3))),
        ("student_pos", lambda: kdops.margin_mse(f(2), f(2), f(2), f(2))),
        ("Q", lambda: kdops.maxsim(f(2, 3, 4), f(5, 6, 4))),
        ("scores", lambda: kdops.plackett_luce_loss(f(2, 3), ranking)),
        ("scores", lambda: kdops.listmle(f(2, 3), torch.rand(2, 3, generator=g).to(device))),
        ("student_logits", lambda: kdops.pld_loss(f(2, 3), f(2, 3), target)),
        ("student", lambda: kdops.listwise_kd_loss(f(2, 3), f(2, 3))),
    ]


@devices
@pytest.mark.parametrize("dtype", NOT_SCORE_DTYPES, ids=str)
@pytest.mark.parametrize("which", range(7))
def test_scores_of_other_dtypes_are_refused_by_name(device, dtype, which):
    """float8 passed at::isFloatingType and failed in the dispatch ("not implemented for
    'Float8_e4m3fn'", no argument named); every backend now refuses it as it refuses complex."""
    name, call = _score_calls(device, dtype)[which]
    with pytest.raises(TypeError, match=f"^{name} must be a floating-point tensor"):
        call()


@pytest.mark.parametrize("dtype", NOT_SCORE_DTYPES[:2], ids=str)
@pytest.mark.parametrize("which", range(7))
def test_fake_kernels_refuse_float8_scores_by_name(dtype, which):
    """The fake kernels (torch.compile, meta tensors) take the same dtypes as the C++ checks."""
    name, call = _score_calls("meta", dtype)[which]
    with pytest.raises(TypeError, match=f"{name} must be a floating-point tensor"):
        call()


INDEX_DTYPES = [torch.int8, torch.int16, torch.int32, torch.uint8, torch.uint16, torch.uint32, torch.uint64]


@devices
@pytest.mark.parametrize("dtype", INDEX_DTYPES, ids=str)
def test_lengths_and_target_of_any_integer_dtype_equal_int64(device, dtype):
    """Unsigned lengths (uint16/32/64) failed on the CPU ("aminmax_cpu" not implemented for
    'UInt32') and were taken by the CUDA kernels; every integer dtype is now taken alike."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, generator=g).to(device), torch.randn(3, 5, generator=g).to(device)
    lengths, target = torch.tensor([5, 0, 3]), torch.tensor([4, 0, 2])
    for call, index in [(lambda x: kdops.listwise_kd_loss(s, t, lengths=x, reduction="none"), lengths),
                        (lambda x: kdops.listmle(s, t, lengths=x, reduction="none"), lengths),
                        (lambda x: kdops.pld_loss(s, t, x, reduction="none"), target)]:
        expected = call(index.to(device))
        torch.testing.assert_close(call(index.to(dtype).to(device)), expected, rtol=0, atol=0)


@devices
def test_bool_and_out_of_range_unsigned_indices_are_refused_by_name(device):
    s, t = torch.randn(2, 3).to(device), torch.randn(2, 3).to(device)
    with pytest.raises(TypeError, match="^lengths must be an integer tensor"):
        kdops.listwise_kd_loss(s, t, lengths=torch.tensor([True, False], device=device))
    with pytest.raises(TypeError, match="^target must be an integer tensor"):
        kdops.pld_loss(s, t, torch.tensor([True, False], device=device))
    # 2^64 - 1 as uint64 is -1 as int64: out of range, named, on every backend.
    huge = torch.tensor([3, 2**64 - 1], dtype=torch.uint64, device=device)
    with raises_value_check(device, "lengths must hold row lengths in", IndexError):
        kdops.listwise_kd_loss(s, t, lengths=huge)


# --- gradient shapes of the raw backward ops ------------------------------------------------------


@devices
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_raw_backward_ops_refuse_a_gradient_of_the_right_size_and_wrong_shape(device, reduction):
    """A [B * N] gradient of a [B, N] loss (or a [1] of a scalar one) was taken because its
    numel matched: a caller's mix-up, refused naming grad on every backend."""
    from tests.helpers import ops

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g).to(device), torch.randn(4, 3, generator=g).to(device)
    loss, count = ops().margin_mse.default(s, t, None, reduction)
    wrong = loss.reshape(-1) if reduction == "none" else loss.reshape(1)
    with pytest.raises(ValueError, match="^grad must be the shape of the loss"):
        ops().margin_mse_backward.default(wrong, s, t, None, count, reduction)
    rows = ops().listwise_kd_loss.default(s, t, None, 1.0, 1.0, reduction)
    wrong = rows.reshape(-1, 1) if reduction == "none" else rows.reshape(1)
    ranking = torch.stack([torch.randperm(3, generator=g) for _ in range(4)]).to(device)
    for call in [lambda: ops().listwise_kd_loss_backward.default(wrong, s, t, None, 1.0, 1.0, reduction, True),
                 lambda: ops().pld_loss_backward.default(wrong, s, t, ranking, 1.0, reduction, True),
                 lambda: ops().plackett_luce_loss_backward.default(wrong, s, ranking, None, None, None, reduction, False),
                 lambda: ops().margin_mse_pairwise_backward.default(wrong, s[:, 0], s[:, 1], t[:, 0], t[:, 1], reduction)]:
        with pytest.raises(ValueError, match="^grad must be"):
            call()
