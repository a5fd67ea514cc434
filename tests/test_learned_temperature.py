"""Temperatures given as tensors (the ops' tensor_temperature overloads), on every backend: the
same losses and score gradients as the float temperatures, bit for bit; the temperatures'
gradients (dL/dT = -(1/T) sum_i x_i dL/dx_i, plus 2 L / Ts for listwise KD's Ts^2) against
kdops.reference's autograd and by gradcheck; one temperature for every row (a 0-dim tensor), its
value refused by name as a float's is; opcheck, torch.compile; and the modules' learn_temperature."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

import kdops
from kdops import reference
from tests.helpers import assert_compiled_matches_eager, devices, ops, raises_value_check
from tests.test_temperature import _exact_kd
from tests.test_temperature import _rows as _kd_rows

REDUCTIONS = ["mean", "sum", "none"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rows(device, dtype=torch.float64, batch=5, n=7, seed=0, scale=3.0, padding=(1e30, -1e30)):
    """Student and teacher scores, lengths [7, 3, 0, 1, 5] (a row of no items, one of one); the
    padding holds values that must take no part (the gradients of T included): 1e30 in the
    student would be the max the centring shifts by, if it were not skipped."""
    student = torch.randn(batch, n, generator=_gen(seed), dtype=torch.float64) * scale
    teacher = student + torch.randn(batch, n, generator=_gen(seed + 1), dtype=torch.float64)
    lengths = torch.tensor([7, 3, 0, 1, 5][:batch])
    pad = torch.arange(n) >= lengths[:, None]
    student, teacher = student.masked_fill(pad, padding[0]), teacher.masked_fill(pad, padding[1])
    return student.to(device, dtype), teacher.to(device, dtype), lengths.to(device)


def _classes(x: torch.Tensor) -> torch.Tensor:
    """PLD's logits (it has no padding): the rows' values, clamped into [-10, 10]."""
    return x.clamp(-10.0, 10.0)


def _temperature(value: float, device="cpu", dtype=torch.float64, requires_grad=True) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device, requires_grad=requires_grad)


def _grads(loss, inputs, upstream):
    return torch.autograd.grad(loss, inputs, upstream)


# --- the same as a float temperature ----------------------------------------------------------


@devices
@pytest.mark.parametrize("t", [1e-30, 0.3, 1.0, 7.0, 1e30], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_a_tensor_temperature_gives_the_float_temperatures_loss_and_score_gradients(device, t, dtype):
    """The overload reads the value and runs the float op: bit-identical results, over the whole
    range of test_temperature.py."""
    student, teacher, lengths = _rows(device, dtype)
    target = torch.tensor([0, 2, 6, 1, 4], device=device)
    for as_tensor in (False, True):
        temp = _temperature(t, requires_grad=False) if as_tensor else t
        s, te = student.clone().requires_grad_(), teacher.clone().requires_grad_()
        kd = kdops.listwise_kd_loss(s, te, temp, None, 0.5, lengths, reduction="none")
        pld = kdops.pld_loss(_classes(s), _classes(te), target, temp, reduction="none")
        grads = torch.autograd.grad((kd.sum(), pld.sum()), (s, te))
        if as_tensor:
            assert torch.equal(kd, expected[0]) and torch.equal(pld, expected[1])
            assert all(torch.equal(g, e) for g, e in zip(grads, expected[2:]))
        expected = (kd, pld, *grads)


# --- the temperature gradients ----------------------------------------------------------------


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(device, reduction):
    """float64 gradcheck of every way to give the temperatures: one tensor for both sides (its
    gradient is the sum of the sides'), one per side, a tensor on one side and a float on the
    other, PLD's; with padding, an empty row and one of one item."""
    student, teacher, lengths = _rows(device, seed=3, padding=(0.5, -0.5))
    student, teacher = student.requires_grad_(), teacher.requires_grad_()
    target = torch.tensor([0, 2, 6, 1, 4], device=device)
    # PLD's logits without the padding's ties: its ranking changes at a tie, as a finite difference may cross it.
    logits = (torch.randn(5, 7, generator=_gen(4), dtype=torch.float64) * 2).to(device).requires_grad_()
    ts, tt = _temperature(1.7), _temperature(0.6)
    checks = [
        (lambda s, t, T: kdops.listwise_kd_loss(s, t, T, lengths=lengths, reduction=reduction), (student, teacher, ts)),
        (lambda s, t, a, b: kdops.listwise_kd_loss(s, t, 1.0, a, b, lengths, reduction), (student, teacher, ts, tt)),
        (lambda s, a: kdops.listwise_kd_loss(s, teacher.detach(), 1.0, a, 0.8, lengths, reduction), (student, ts)),
        (lambda b: kdops.listwise_kd_loss(student.detach(), teacher.detach(), 1.0, 2.0, b, lengths, reduction), (tt,)),
        (lambda s, t, T: kdops.pld_loss(s, t, target, T, reduction), (student, logits, ts)),
        (lambda T: kdops.pld_loss(student.detach(), logits.detach(), target, T, reduction), (tt,)),
    ]
    for fn, args in checks:
        assert torch.autograd.gradcheck(fn, args)


def _centred_products(x, grad, lengths):
    """sum_i |x_i - max x| |dL/dx_i| over the rows' valid items: what dL/dT sums (over T), hence
    the scale of its rounding, as 2 |L| is for the student side's other term."""
    valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    top = x.where(valid, -math.inf).amax(1, keepdim=True)
    return ((x - top).where(valid, 0.0).abs() * grad.abs()).double().sum()


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-side"])
def test_listwise_kd_temperature_gradients_match_the_reference(device, reduction, dtype, shared):
    """Against autograd through kdops.reference in float64, with padding of +-1e30 (which must take
    no part: as the max of a row it would leave nothing of the others), scores of 1e3 (the
    centring keeps their products from cancelling) and an upstream gradient != 1; within a few
    roundings of the terms dL/dT is formed from (2 L and the centred sums, over T: the two sides'
    parts of a shared temperature partly cancel)."""
    student, teacher, lengths = _rows(device, dtype, seed=5, scale=1e3)
    student, teacher = student.requires_grad_(), teacher.requires_grad_()
    ts, tt = _temperature(40.0, device, dtype), _temperature(25.0, device, dtype)
    temps = (ts, None, None) if shared else (1.0, ts, tt)
    loss = kdops.listwise_kd_loss(student, teacher, *temps, lengths, reduction)
    upstream = torch.rand(loss.shape, generator=_gen(9), dtype=torch.float64).to(device, dtype) + 0.5
    got = _grads(loss, (student, teacher, ts) if shared else (student, teacher, ts, tt), upstream)

    ref_ts, ref_tt = _temperature(40.0), _temperature(25.0)
    ref_temps = (ref_ts, None, None) if shared else (1.0, ref_ts, ref_tt)
    ref = reference.listwise_kd_loss(student.double().cpu(), teacher.double().cpu(), *ref_temps, lengths.cpu(), reduction)
    expected = _grads(ref, (ref_ts,) if shared else (ref_ts, ref_tt), upstream.double().cpu())
    student_terms = 2 * (loss.double() * upstream.double()).abs().sum() + _centred_products(student, got[0], lengths)
    teacher_terms = _centred_products(teacher, got[1], lengths)
    scales = [(student_terms + teacher_terms) / 40.0] if shared else [student_terms / 40.0, teacher_terms / 25.0]
    for g, e, scale in zip(got[2:], expected, scales):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double().cpu(), e, rtol=0.0, atol=16 * torch.finfo(dtype).eps * scale.item())


@devices
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pld_temperature_gradient_matches_the_reference(device, reduction):
    student, teacher, _ = _rows(device, seed=7)
    student, teacher = _classes(student), _classes(teacher)
    target = torch.tensor([0, 2, 6, 1, 4], device=device)
    temperature = _temperature(1.3)
    loss = kdops.pld_loss(student, teacher, target, temperature, reduction)
    upstream = torch.rand(loss.shape, generator=_gen(2), dtype=torch.float64) + 0.5
    ref_t = _temperature(1.3)
    ref = reference.pld_loss(student.cpu(), teacher.cpu(), target.cpu(), ref_t, reduction)
    torch.testing.assert_close(_grads(loss, (temperature,), upstream.to(device))[0], _grads(ref, (ref_t,), upstream)[0])


def _exact_temperature_grad(student, teacher, t):
    """dL/dT of sum_b T^2 KL(softmax(t_b / T) || softmax(s_b / T)) in 80 digits (mpmath): each
    row's (2 L - sum_i s_i dL/ds_i - sum_i t_i dL/dt_i) / T from its exact loss and gradients."""
    total = mpmath.mpf(0)
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        s_row, t_row = [mpmath.mpf(v) for v in s_row], [mpmath.mpf(v) for v in t_row]
        loss, grad_s, grad_t = _exact_kd(s_row, t_row, t, t)
        dot = mpmath.fsum(x * g for x, g in zip(s_row + t_row, grad_s + grad_t))
        total += (2 * loss - dot) / mpmath.mpf(t)
    return float(total)


@devices
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("t", [1e-30, 1e-10, 1e-2, 1e2, 1e10, 1e30], ids=repr)
def test_temperature_gradient_over_the_float_range(device, dtype, t):
    """From T = 1e-30 to 1e30 (test_temperature.py's range), against the exact value: finite,
    and within a few roundings of the terms it is formed from, 2 L and the centred
    sum_i x_i dL/dx_i of each side, over T (at a high temperature they cancel to a gradient far
    below that rounding, which no formula from L and these gradients avoids)."""
    student, teacher = _kd_rows(dtype)
    lengths = torch.full((student.shape[0],), student.shape[1])
    s, te = student.to(device).requires_grad_(), teacher.to(device).requires_grad_()
    temperature = _temperature(t, device, dtype)
    loss = kdops.listwise_kd_loss(s, te, temperature, reduction="sum")
    got, grad_s, grad_t = torch.autograd.grad(loss, (temperature, s, te))
    assert got.isfinite()
    terms = 2 * loss.double().abs() + _centred_products(s.cpu(), grad_s.cpu(), lengths) + _centred_products(
        te.cpu(), grad_t.cpu(), lengths)
    exact = _exact_temperature_grad(student.double(), teacher.double(), t)
    assert abs(got.item() - exact) <= 16 * torch.finfo(dtype).eps * terms.item() / t, (got.item(), exact)


@devices
def test_padding_takes_no_part_in_the_temperature_gradients(device):
    """NaN padding (and 1e30 or -inf) gives the same temperature gradients, bit for bit."""
    grads = []
    for padding in ((math.nan, math.nan), (1e30, -1e30), (-math.inf, 0.0)):
        student, teacher, lengths = _rows(device, seed=17, padding=padding)
        ts, tt = _temperature(1.5), _temperature(0.8)
        loss = kdops.listwise_kd_loss(student, teacher, 1.0, ts, tt, lengths, reduction="none")
        grads.append(torch.autograd.grad(loss.sum(), (ts, tt)))
        assert all(g.isfinite() for g in grads[-1])
    assert all(torch.equal(g, e) for other in grads[1:] for g, e in zip(other, grads[0]))


# --- what is refused ----------------------------------------------------------------------------


@devices
@pytest.mark.parametrize("name", ["temperature", "student_temperature", "teacher_temperature", "pld"])
def test_bad_temperature_tensors_are_refused_by_name(device, name):
    """One temperature for every row: a [B] tensor is refused (the kernels take one value), as
    is an integer tensor; a value outside (0, inf) as for a float, by the op that reads it."""
    student, teacher, _ = _rows(device, batch=2)
    student, teacher = _classes(student), _classes(teacher)
    arg = "temperature" if name == "pld" else name

    def call(value):
        if name == "pld":
            return kdops.pld_loss(student, teacher, torch.tensor([0, 1], device=device), value)
        return kdops.listwise_kd_loss(student, teacher, **{name: value})

    with pytest.raises(ValueError, match=f"^{arg} must be a float or a 0-dim tensor"):
        call(torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match=f"^{arg} must be a floating-point tensor"):
        call(torch.tensor(2))
    # The value is read by the op, which names the side it stands for: `temperature` for both
    # sides is named student_temperature there. The CUDA kernels read it in device memory and
    # assert it there (raises_value_check).
    side = "student_temperature" if arg == "temperature" and name != "pld" else arg
    for bad in (0.0, -1.0, math.nan, math.inf):
        with raises_value_check(device, f"{side} must be a positive finite number"):
            call(_temperature(bad, device=device))


@devices
def test_raw_overloads_check_their_temperature_tensors(device):
    """The C++ checks of the overloads, called directly (the Python API checks first)."""
    s, t, _ = _rows(device, batch=2)
    s, t = _classes(s), _classes(t)
    row, one = torch.ones(2, dtype=torch.float64, device=device), _temperature(1.0, requires_grad=False)
    with pytest.raises(ValueError, match="student_temperature must be a float or a 0-dim tensor"):
        ops().listwise_kd_loss.tensor_temperature(s, t, None, row, one, "mean")
    with pytest.raises(TypeError, match="teacher_temperature must be a floating-point tensor"):
        ops().listwise_kd_loss.tensor_temperature(s, t, None, one, torch.tensor(1), "mean")
    with raises_value_check(device, "temperature must be a positive finite number"):
        ops().pld_loss_and_grads.tensor_temperature(s, t, torch.tensor([0, 1], device=device), -one, "mean", True)


def test_double_backward_is_refused():
    student, teacher, lengths = _rows("cpu")
    temperature = _temperature(2.0)
    loss = kdops.listwise_kd_loss(student.requires_grad_(), teacher, temperature, lengths=lengths)
    (grad,) = torch.autograd.grad(loss, temperature, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        grad.backward()


# --- opcheck, torch.compile ---------------------------------------------------------------------


@devices
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck(device, requires_grad, reduction):
    student, teacher, lengths = _rows(device, torch.float32, batch=4)
    student, teacher = student.requires_grad_(requires_grad), teacher.requires_grad_(requires_grad)
    ts, tt = _temperature(2.0, dtype=torch.float32, requires_grad=requires_grad), _temperature(0.5)
    target = torch.tensor([5, 0, 2, 2], device=device)
    namespace = ops()
    torch.library.opcheck(namespace.listwise_kd_loss.tensor_temperature, (student, teacher, lengths, ts, tt, reduction))
    torch.library.opcheck(namespace.pld_loss.tensor_temperature, (_classes(student), _classes(teacher), target, ts, reduction))
    # These return gradients, which are not differentiable: their schema, fake and dispatch only.
    s, t, ts = student.detach(), teacher.detach(), ts.detach()
    torch.library.opcheck(namespace.listwise_kd_loss_and_grads.tensor_temperature,
                          (s, t, lengths, ts, tt.detach(), reduction, requires_grad))
    torch.library.opcheck(namespace.pld_loss_and_grads.tensor_temperature,
                          (_classes(s), _classes(t), target, ts, reduction, requires_grad))


@devices
def test_torch_compile_fullgraph(device):
    _, _, lengths = _rows(device, batch=5)
    target = torch.tensor([0, 2, 6, 1, 4], device=device)

    def step(student, teacher, ts, tt):
        return (kdops.listwise_kd_loss(student, teacher, 1.0, ts, tt, lengths)
                + kdops.pld_loss(student, teacher, target, tt))

    args = [torch.randn(5, 7, device=device, requires_grad=True) for _ in range(2)]
    temps = [torch.tensor(1.5, device=device, requires_grad=True), torch.tensor(0.7, requires_grad=True)]
    assert_compiled_matches_eager(step, args + temps)


# --- the modules --------------------------------------------------------------------------------


@devices
def test_modules_learn_the_temperature_in_log_space(device):
    """learn_temperature=True: a parameter log T, starting at log(temperature); its gradient is
    T dL/dT (the reference's), and a few optimizer steps move it."""
    student, teacher, lengths = _rows(device, seed=13)
    target = torch.tensor([0, 2, 6, 1, 4], device=device)
    modules = [
        (kdops.ListwiseKDLoss(2.0, learn_temperature=True),
         lambda T: reference.listwise_kd_loss(student, teacher, T, lengths=lengths), (student, teacher, lengths)),
        (kdops.ListwiseKDLoss(2.0, teacher_temperature=1.0, learn_temperature=True),
         lambda T: reference.listwise_kd_loss(student, teacher, T, None, 1.0, lengths), (student, teacher, lengths)),
        (kdops.PLDLoss(2.0, learn_temperature=True),
         lambda T: reference.pld_loss(_classes(student), _classes(teacher), target, T),
         (_classes(student), _classes(teacher), target)),
    ]
    for module, reference_fn, inputs in modules:
        module.double()
        (name, parameter), = module.named_parameters()
        assert name == "learned_temperature.log_temperature" and parameter.item() == pytest.approx(math.log(2.0))
        (grad,) = torch.autograd.grad(module(*inputs), parameter)
        ref_t = _temperature(2.0)
        (expected,) = torch.autograd.grad(reference_fn(ref_t), ref_t)
        torch.testing.assert_close(grad, 2.0 * expected)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            module(*inputs).backward()
            optimizer.step()
        assert abs(module.learned_temperature().item() - 2.0) > 1e-3


def test_learn_temperature_needs_a_side_to_learn():
    with pytest.raises(ValueError, match="student_temperature and teacher_temperature both replace it"):
        kdops.ListwiseKDLoss(student_temperature=1.0, teacher_temperature=2.0, learn_temperature=True)
    with pytest.raises(TypeError, match="learn_temperature must be a bool"):
        kdops.PLDLoss(learn_temperature=1)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        kdops.LearnedTemperature(0.0)
    assert kdops.ListwiseKDLoss().learned_temperature is None and not list(kdops.PLDLoss().parameters())
