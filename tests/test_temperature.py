"""The temperature rule over the whole float range (docs/numerics.md), on every backend: any T in
(0, inf) is taken and T <= 0, NaN, inf or a bool refused naming the argument; no 1/T, x/T or T^2
is formed where it overflows, so a finite loss never turns into NaN or inf; the limits are exact
(T -> 0: the hard max, ties shared; T -> inf: uniform); and from T = 1e-30 to 1e30 losses and
gradients are as accurate as the plain float32 formula is at T = 1 (its best case), measured against
values computed exactly (mpmath, 80 digits): within 4 units of float32 roundoff everywhere."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

import kdops
from kdops import reference
from tests.helpers import devices

mpmath.mp.dps = 80  # r = log p - log q is ~1e-30 at T = 1e30: 30 digits go before the first one kept

TEMPERATURES = [1e-30, 1e-20, 1e-10, 1e-5, 1e-2, 1.0, 1e2, 1e5, 1e10, 1e20, 1e30]


# --- exact values -------------------------------------------------------------------------------


def _softmax(x, t):
    m = max(x)
    e = [mpmath.exp((xi - m) / t) for xi in x]
    total = mpmath.fsum(e)
    return [ei / total for ei in e]


def _exact_kd(s, t, ts, tt):
    """Ts^2 KL(softmax(t / Tt) || softmax(s / Ts)) and its gradients in s and t, exactly."""
    ts, tt = mpmath.mpf(ts), mpmath.mpf(tt)
    p, q = _softmax(t, tt), _softmax(s, ts)
    r = [mpmath.log(pi) - mpmath.log(qi) if pi != 0 else mpmath.mpf(0) for pi, qi in zip(p, q)]
    kl = mpmath.fsum(pi * ri for pi, ri in zip(p, r))
    grad_s = [ts * (qi - pi) for pi, qi in zip(p, q)]
    grad_t = [ts * ts / tt * pi * (ri - kl) for pi, ri in zip(p, r)]
    return ts * ts * kl, grad_s, grad_t


def _exact_pld(s, t, target, temperature):
    """PLD's loss and gradients exactly: ranking = target first, then descending t (ties: lower
    index); w_k = softmax(t / T)[pi_k]; d/ds[pi_j] = sum_{k<=j} w_k P(pi_j first of pi_k..) - w_j,
    d/dt_c = w_c (term_c - loss) / T."""
    n = len(s)
    rest = sorted((i for i in range(n) if i != target), key=lambda i: (-t[i], i))
    pi = [target, *rest]
    w_of = _softmax(t, mpmath.mpf(temperature))
    w = [w_of[i] for i in pi]
    x = [s[i] for i in pi]
    suffix = [mpmath.fsum(mpmath.exp(xj) for xj in x[k:]) for k in range(n)]
    terms = [mpmath.log(suffix[k]) - x[k] for k in range(n)]
    loss = mpmath.fsum(wk * tk for wk, tk in zip(w, terms))
    grad_s, grad_t = [mpmath.mpf(0)] * n, [mpmath.mpf(0)] * n
    for j in range(n):
        picked = mpmath.fsum(w[k] * mpmath.exp(x[j]) / suffix[k] for k in range(j + 1))
        grad_s[pi[j]] = picked - w[j]
        grad_t[pi[j]] = w[j] * (terms[j] - loss) / temperature
    return loss, grad_s, grad_t


# --- the plain formula, for the accuracy bar ----------------------------------------------------


def _plain_kd(student, teacher, ts, tt):
    log_q = torch.log_softmax(student / ts, dim=1)
    log_p = torch.log_softmax(teacher / tt, dim=1)
    return ts * ts * (log_p.exp() * (log_p - log_q)).sum(1)


def _plain_pld(student, teacher, target, temperature):
    ranking = reference.pld_ranking(teacher, target)
    weights = torch.softmax(teacher / temperature, dim=1).gather(1, ranking)
    return reference.plackett_luce_loss(student, ranking, weights=weights, reduction="none")


# --- helpers ------------------------------------------------------------------------------------


def _rows(dtype, n=6, rows=3, seed=0):
    """Rows of n items: student scores of O(3) and a teacher near them (a small KL, the hard
    case at high temperature); the last row has a tie at the top of each."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(rows, n, generator=gen, dtype=torch.float64) * 3
    teacher = student + torch.randn(rows, n, generator=gen, dtype=torch.float64) * 0.5
    student[-1, :2] = student[-1].max() + 1
    teacher[-1, 1:3] = teacher[-1].max() + 1
    return student.to(dtype), teacher.to(dtype)


TARGET = [0, 3, 5]


def _loss_and_grads(fn, student, teacher, *args, **kwargs):
    """Per-row losses and the gradients of their sum in both scores."""
    student = student.detach().clone().requires_grad_()
    teacher = teacher.detach().clone().requires_grad_()
    loss = fn(student, teacher, *args, **kwargs)
    grads = torch.autograd.grad(loss.sum(), (student, teacher))
    return [loss.detach(), *[g.detach() for g in grads]]


def _exact_rows(exact_fn, student, teacher, per_row, *args):
    """[loss [B], grad_s [B, n], grad_t [B, n]] of exact_fn, row b called with per_row[b] (or
    nothing) and args, as float64."""
    rows = []
    for b, (s, t) in enumerate(zip(student.double().tolist(), teacher.double().tolist())):
        extra = [] if per_row is None else [per_row[b]]
        rows.append(exact_fn([mpmath.mpf(v) for v in s], [mpmath.mpf(v) for v in t], *extra, *args))
    loss = torch.tensor([float(r[0]) for r in rows], dtype=torch.float64)
    grad_s = torch.tensor([[float(v) for v in r[1]] for r in rows], dtype=torch.float64)
    grad_t = torch.tensor([[float(v) for v in r[2]] for r in rows], dtype=torch.float64)
    return [loss, grad_s, grad_t]


def _relative_errors(values, exact):
    """Per quantity (loss, grad s, grad t): the largest error over the batch relative to the
    largest exact magnitude in it (a loss of 1e-33 or a gradient that is the 1e-32 difference of
    two probabilities that round to 1 are beyond any float32 formula, and beside the batch's
    O(1e-2) values they carry no weight); inf for a non-finite value (no exact value here is)."""
    errors = []
    for v, e in zip(values, exact):
        v = v.double().cpu()
        assert e.isfinite().all()
        err = torch.where(v.isfinite(), (v - e).abs(), math.inf).max() / e.abs().max()
        errors.append(err.item())
    return errors


_NAMES = ("loss", "student grad", "teacher grad")

# (Ts, Tt): equal over the range, and each side at its extremes against the other at 1 (the
# student at 1e15, not 1e30: Ts^2 KL = 1e60 KL would overflow float32, correctly).
KD_PAIRS = [(t, t) for t in TEMPERATURES] + [(1.0, 1e-30), (1.0, 1e30), (1e-30, 1.0), (1e15, 1.0)]


def _kd(student, teacher, ts, tt):
    return kdops.listwise_kd_loss(student, teacher, student_temperature=ts, teacher_temperature=tt, reduction="none")


def _pld(student, teacher, temperature):
    return kdops.pld_loss(student, teacher, torch.tensor(TARGET, device=student.device), temperature, reduction="none")


def _plain_pld_rows(student, teacher, temperature):
    return _plain_pld(student, teacher, torch.tensor(TARGET), temperature)


# The accuracy bar: 4 units of float32 roundoff (u = 2^-24) relative to the batch's largest exact
# value. A float32 result is at best within 1 of the exact value; the plain float32 formula at
# T = 1, its best case, is within 2 on these rows (test_the_plain_formula_meets_the_bar_at_t_1),
# and fails by orders of magnitude away from it (NaN, inf, 0, or a KL that is mostly rounding).
BAR = 4 * 2.0**-24


def test_the_plain_formula_meets_the_bar_at_t_1():
    student, teacher = _rows(torch.float32)
    kd = _relative_errors(_loss_and_grads(_plain_kd, student, teacher, 1.0, 1.0),
                          _exact_rows(_exact_kd, student, teacher, None, 1.0, 1.0))
    pld = _relative_errors(_loss_and_grads(_plain_pld_rows, student, teacher, 1.0),
                           _exact_rows(_exact_pld, student, teacher, TARGET, 1.0))
    assert max(kd + pld) <= BAR


# --- accuracy over the range --------------------------------------------------------------------


@devices
@pytest.mark.parametrize("ts,tt", KD_PAIRS, ids=[f"Ts={a:g},Tt={b:g}" for a, b in KD_PAIRS])
def test_listwise_kd_accuracy_over_the_float_range(device, ts, tt):
    student, teacher = _rows(torch.float32)
    exact = _exact_rows(_exact_kd, student, teacher, None, ts, tt)
    ours = _relative_errors(_loss_and_grads(_kd, student.to(device), teacher.to(device), ts, tt), exact)
    for name, mine in zip(_NAMES, ours):
        assert mine <= BAR, f"{name}: error {mine:.3e} > {BAR:.3e}"


@devices
@pytest.mark.parametrize("temperature", TEMPERATURES, ids=lambda t: f"T={t:g}")
def test_pld_accuracy_over_the_float_range(device, temperature):
    student, teacher = _rows(torch.float32)
    exact = _exact_rows(_exact_pld, student, teacher, TARGET, temperature)
    ours = _relative_errors(_loss_and_grads(_pld, student.to(device), teacher.to(device), temperature), exact)
    for name, mine in zip(_NAMES, ours):
        assert mine <= BAR, f"{name}: error {mine:.3e} > {BAR:.3e}"


# --- one answer where x / T or T^2 overflows on finite inputs -----------------------------------


@devices
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_overflowing_scaled_logits_give_the_reference_answer(device, dtype):
    """x / T overflows at T = 1e-30 for x = 1e9 (float32) and at T = 1e-300 for x = 1e9 (float64):
    the CPU gave 0 there (a fused multiply-add), the CUDA kernels and kdops.reference NaN. The
    rule is the limit, the same everywhere: the hard max (student = teacher: a KL of 0)."""
    tiny = 1e-30 if dtype == torch.float32 else 1e-300
    x = torch.tensor([[1e9, 0.0], [-5.0, 1e9]], dtype=dtype)
    kd = kdops.listwise_kd_loss(x.to(device), x.clone().to(device), tiny, reduction="none")
    expected = reference.listwise_kd_loss(x, x.clone(), tiny, reduction="none")
    assert expected.tolist() == [0.0, 0.0]
    assert kd.cpu().tolist() == [0.0, 0.0]
    # PLD: the weights are the teacher's hard max; the loss is that class's PL term.
    student = torch.tensor([[1e-3, 2e-3, 0.5], [3.0, 1e9, -1e9]], dtype=dtype)
    teacher = torch.tensor([[2e-3, 1e-3, 1e9], [1e9, 0.0, 5.0]], dtype=dtype)
    target = torch.tensor([0, 2])
    for t in (tiny, 1e-39):
        pld = kdops.pld_loss(student.to(device), teacher.to(device), target.to(device), t, reduction="none")
        expected = reference.pld_loss(student, teacher, target, t, reduction="none")
        exact = _exact_rows(_exact_pld, student, teacher, target.tolist(), t)[0]
        assert expected.isfinite().all() and pld.isfinite().all()
        torch.testing.assert_close(pld.cpu().double(), exact.to(dtype).double())
        torch.testing.assert_close(expected.double(), exact.to(dtype).double())


@devices
@pytest.mark.parametrize("dtype,huge", [(torch.float32, 2e19), (torch.float64, 1.4e154)], ids=["float32", "float64"])
def test_a_temperature_whose_square_overflows_keeps_a_zero_kl(device, dtype, huge):
    """Ts^2 overflows (float32 T >= 1.85e19, float64 >= 1.3e154); a student equal to its teacher
    still has a KL of exactly 0, loss and gradients, not inf * 0 = NaN."""
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    loss, grad_s, grad_t = _loss_and_grads(
        lambda s, t: kdops.listwise_kd_loss(s, t, huge, reduction="none"), x, x.clone())
    assert loss.tolist() == [0.0] * 3
    assert (grad_s == 0).all() and (grad_t == 0).all()
    assert reference.listwise_kd_loss(x.cpu(), x.cpu().clone(), huge, reduction="none").tolist() == [0.0] * 3


# --- the limits ---------------------------------------------------------------------------------


@devices
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("huge", [1e30, 1e300])
def test_listwise_kd_at_an_infinite_temperature_limit(device, dtype, huge):
    """As T = Ts = Tt -> inf both softmaxes go uniform and T^2 KL -> sum_i (d_i - mean d)^2 / (2n),
    d = teacher - student; the gradients -> -(d_i - mean d) / n (student) and +(...) / n
    (teacher). 1e300 is past float32's range: the temperature rounds to inf there and the
    kernels must still give this limit (the plain formula gives NaN or 0)."""
    student, teacher = _rows(dtype)
    delta = (teacher - student).double()
    centred = delta - delta.mean(dim=1, keepdim=True)
    n = student.shape[1]
    limit = [(centred**2).sum(1) / (2 * n), -centred / n, centred / n]
    got = _loss_and_grads(lambda s, t: kdops.listwise_kd_loss(s, t, huge, reduction="none"),
                          student.to(device), teacher.to(device))
    eps = torch.finfo(dtype).eps
    for name, value, expected in zip(_NAMES, got, limit):
        # The limit itself is off by O(range / T) <= 1e-28 here; the rest is rounding of
        # O(n) operations on the inputs.
        torch.testing.assert_close(value.double().cpu(), expected, rtol=64 * eps, atol=64 * eps, msg=name)


@devices
@pytest.mark.parametrize("dtype,tiny", [(torch.float32, 1e-45), (torch.float64, 1e-320)], ids=["float32", "float64"])
def test_pld_at_a_zero_temperature_limit_shares_ties(device, dtype, tiny):
    """As T -> 0 PLD's weights become the teacher's hard max, tied maxima sharing it equally;
    T below the dtype's smallest normal (1/T overflows) gives exactly that."""
    student = torch.tensor([[0.3, -1.0, 2.0, 0.5], [1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    teacher = torch.tensor([[1.0, 3.0, 3.0, -2.0], [7.0, 0.0, 7.0, 7.0]], dtype=dtype)
    target = torch.tensor([0, 1])
    ranking = reference.pld_ranking(teacher, target)
    top = teacher == teacher.amax(dim=1, keepdim=True)
    weights = (top / top.sum(dim=1, keepdim=True)).to(dtype).gather(1, ranking)
    expected = reference.plackett_luce_loss(student, ranking, weights=weights, reduction="none")
    got = kdops.pld_loss(student.to(device), teacher.to(device), target.to(device), tiny, reduction="none")
    torch.testing.assert_close(got.cpu(), expected)


# --- the accepted range -------------------------------------------------------------------------


BAD_TEMPERATURES = [0.0, -1.0, math.nan, math.inf, -math.inf, True, False, "1.0"]


def _scores(device):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, generator=gen).to(device)
    return student, (student + torch.randn(2, 3, generator=gen).to(device))


def _kd_call(device, **temperatures):
    return kdops.listwise_kd_loss(*_scores(device), **temperatures)


def _pld_call(device, temperature):
    return kdops.pld_loss(*_scores(device), torch.tensor([0, 2], device=device), temperature)


@devices
@pytest.mark.parametrize("bad", BAD_TEMPERATURES, ids=repr)
@pytest.mark.parametrize("name", ["temperature", "student_temperature", "teacher_temperature", "pld"])
def test_temperatures_outside_the_open_interval_are_refused_by_name(device, bad, name):
    """T in (0, inf): zero, negatives, NaN, infinities, bools (True is not 1.0, as top_k=True is
    not 1) and non-numbers raise, naming the argument given."""
    arg = "temperature" if name == "pld" else name
    error = TypeError if isinstance(bad, (bool, str)) else ValueError
    with pytest.raises(error, match=f"^{arg} must be a positive finite number"):
        _pld_call(device, bad) if name == "pld" else _kd_call(device, **{name: bad})


@devices
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf], ids=repr)
def test_raw_ops_refuse_temperatures_by_name(device, bad):
    """The C++ check of every op taking a temperature (forward, backward, *_and_grads)."""
    from tests.helpers import ops

    s, t = _scores(device)
    target = torch.tensor([0, 2], device=device)
    grad = torch.ones((), device=device)
    calls = {
        "student_temperature": [lambda: ops().listwise_kd_loss.default(s, t, None, bad, 1.0, "mean"),
                                lambda: ops().listwise_kd_loss_backward.default(grad, s, t, None, bad, 1.0, "mean", True),
                                lambda: ops().listwise_kd_loss_and_grads.default(s, t, None, bad, 1.0, "mean", True)],
        "teacher_temperature": [lambda: ops().listwise_kd_loss.default(s, t, None, 1.0, bad, "mean")],
        "temperature": [lambda: ops().pld_loss.default(s, t, target, bad, "mean"),
                        lambda: ops().pld_loss_and_grads.default(s, t, target, bad, "mean", True)],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=f"{name} must be a positive finite number"):
                fn()


@devices
@pytest.mark.parametrize("t", [5e-324, 1e-45, 1e-39, 1e-30, 1e30, 1e39, 1.7e308], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_every_positive_finite_temperature_is_taken(device, t, dtype):
    """The whole open interval, subnormal and past float32's range included, in every dtype: a
    finite loss and finite gradients, never NaN (no ties in these rows, so PLD's teacher
    gradient w (term - loss) / T is 0 at the hard max rather than growing like 1/T)."""
    s, tt = (x.to(dtype) for x in _scores(device))
    target = torch.tensor([0, 2], device=device)
    for fn in (lambda a, b: kdops.listwise_kd_loss(a, b, t, reduction="none"),
               lambda a, b: kdops.pld_loss(a, b, target, t, reduction="none")):
        loss, grad_s, grad_t = _loss_and_grads(fn, s, tt)
        assert loss.isfinite().all() and grad_s.isfinite().all() and grad_t.isfinite().all(), (loss, grad_s, grad_t)
