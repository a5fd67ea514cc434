"""Properties every op must have in long training runs: bit-identical results run to run and
whatever the thread count, correct results when called from several threads at once, the same
results for non-contiguous and expanded (stride 0) inputs, and agreement with the reference
on random calls (a fuzz test with a fixed example budget)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import torch

import kdops
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import FLOAT_DTYPES, as_reference, assert_close, devices
from tests.op_cases import OP_CASES

cases = pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)


def _run(case, args, kwargs, backward=True):
    """Loss value and the gradients of every float input (detach keeps the input's strides)."""
    leaves = [a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a for a in args]
    out = case.kdops_fn(*leaves, **kwargs)
    grads = []
    if backward:
        wrt = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
        grads = torch.autograd.grad(out.float().sum(), wrt)
    return out.detach(), [g.detach() for g in grads]


def _same_bits(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert torch.equal(out_a, out_b)
    for x, y in zip(grads_a, grads_b):
        assert torch.equal(x, y)


@cases
@devices
def test_deterministic_run_to_run_and_across_thread_counts(case, device):
    args, kwargs = case.make(torch.Generator().manual_seed(1), 5000, device, torch.float32)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, threads))  # parallel even where the default is one thread
        first = _run(case, args, kwargs)
        _same_bits(first, _run(case, args, kwargs))
        torch.set_num_threads(1)
        _same_bits(first, _run(case, args, kwargs))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


@cases
def test_concurrent_calls_from_python_threads(case):
    inputs = [case.make(torch.Generator().manual_seed(s), 300 + s, "cpu", torch.float32) for s in range(8)]
    expected = [_run(case, a, k) for a, k in inputs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda ak: _run(case, *ak), inputs * 3))
    for i, result in enumerate(results):
        _same_bits(expected[i % len(inputs)], result)


def _strided_copy(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (every other element of a wider buffer)."""
    if t.dim() == 0:
        return t
    wide = torch.empty(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


@cases
@devices
def test_non_contiguous_and_expanded_inputs(case, device):
    args, kwargs = case.make(torch.Generator().manual_seed(3), 40, device, torch.float32)
    expected = _run(case, args, kwargs)
    strided = [_strided_copy(a) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    assert any(isinstance(a, torch.Tensor) and not a.is_contiguous() for a in strided)
    out, grads = _run(case, strided, kwargs)
    torch.testing.assert_close(out, expected[0])
    for g, e in zip(grads, expected[1]):
        torch.testing.assert_close(g, e)
    # Stride-0 inputs: a row broadcast over the batch gives the result of its materialised copy.
    first = args[0]
    expanded = first[:1].expand_as(first)
    assert expanded.stride(0) == 0
    out_expanded, grads_expanded = _run(case, [expanded, *args[1:]], kwargs)
    out_copy, grads_copy = _run(case, [expanded.contiguous(), *args[1:]], kwargs)
    torch.testing.assert_close(out_expanded, out_copy)
    for g, e in zip(grads_expanded, grads_copy):
        torch.testing.assert_close(g, e)


@devices
@settings(max_examples=150, deadline=None)
@given(
    case=st.sampled_from(OP_CASES),
    dtype=st.sampled_from(FLOAT_DTYPES),
    size=st.integers(1, 64),
    seed=st.integers(0, 2**20),
)
def test_fuzz_against_reference(case, device, dtype, size, seed):
    args, kwargs = case.make(torch.Generator().manual_seed(seed), size, device, dtype)
    out, grads = _run(case, args, kwargs)
    ref_args = [as_reference(a).requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else (as_reference(a) if isinstance(a, torch.Tensor) else a) for a in args]
    ref_kwargs = {k: as_reference(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    expected = case.reference_fn(*ref_args, **ref_kwargs)
    wrt = [a for a in ref_args if isinstance(a, torch.Tensor) and a.requires_grad]
    expected_grads = torch.autograd.grad(expected.sum(), wrt)
    magnitude = max(1.0, expected.detach().abs().max().item())
    assert_close(out, expected.detach(), dtype, scale=magnitude)
    for g, e in zip(grads, expected_grads):
        assert_close(g, e, dtype, scale=max(1.0, e.abs().max().item()))


def _free_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.mark.skipif(_free_memory_bytes() < 12 * 2**30, reason="needs ~5 GiB for a D of 2^31 elements")
def test_maxsim_indexes_past_2_31_elements():
    """D holds more than 2^31 elements (bf16, 4 GiB): the docs whose tokens start past that
    offset must score as the same docs scored alone, so no index wraps at 32 bits."""
    import kdops
    from kdops import reference

    nd, ld, dim = 2**17 + 2, 2**11, 8
    assert nd * ld * dim > 2**31
    D = torch.empty(nd, ld, dim, dtype=torch.bfloat16)
    D[:-2].fill_(-1.0)
    tail = torch.randn(2, ld, dim, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    D[-2:] = tail
    Q = torch.randn(1, 3, dim, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    scores = kdops.maxsim(Q, D)
    assert scores.shape == (1, nd)
    # bf16 inputs, float32 products and sums: the same values as the float32 reference.
    torch.testing.assert_close(scores[:, -2:], reference.maxsim(Q.float(), tail.float()), rtol=1e-5, atol=1e-5)


# --- the bad-input matrix: every public op, the same mistakes ----------------------------------

FIRST_ARGUMENT = {
    "margin_mse": "student",
    "margin_mse_pairwise": "student_pos",
    "plackett_luce_loss": "scores",
    "listmle": "scores",
    "pld_loss": "student_logits",
    "listwise_kd_loss": "student",
    "maxsim": "Q",
    "maxsim_per_query": "Q",
    "maxsim_packed": "Q",
}


def test_every_op_case_names_its_first_argument():
    assert {case.name for case in OP_CASES} == set(FIRST_ARGUMENT)


@cases
@pytest.mark.parametrize("bad_dtype", [torch.int64, torch.bool, torch.complex64], ids=str)
def test_non_floating_scores_are_refused_by_name(case, bad_dtype):
    args, kwargs = case.make(torch.Generator().manual_seed(4), 12, "cpu", torch.float32)
    bad = args[0].to(bad_dtype) if bad_dtype != torch.bool else args[0] > 0
    with pytest.raises((TypeError, ValueError), match=FIRST_ARGUMENT[case.name]):
        case.kdops_fn(bad, *args[1:], **kwargs)


@cases
def test_wrong_rank_is_refused_by_name(case):
    args, kwargs = case.make(torch.Generator().manual_seed(5), 12, "cpu", torch.float32)
    with pytest.raises(ValueError, match=FIRST_ARGUMENT[case.name]):
        case.kdops_fn(args[0].unsqueeze(0), *args[1:], **kwargs)


@cases
def test_mixed_dtypes_are_refused(case):
    args, kwargs = case.make(torch.Generator().manual_seed(6), 12, "cpu", torch.float32)
    floats = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
    if len(floats) < 2:
        pytest.skip(f"{case.name} takes one floating tensor")
    mixed = list(args)
    mixed[floats[1]] = mixed[floats[1]].double()
    with pytest.raises((TypeError, ValueError), match="dtype"):
        case.kdops_fn(*mixed, **kwargs)


MODULES = [
    (lambda: __import__("kdops").MarginMSELoss(), lambda g: (torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g))),
    (lambda: __import__("kdops").ListMLELoss(), lambda g: (torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g))),
    (lambda: __import__("kdops").ListwiseKDLoss(temperature=2.0), lambda g: (torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g))),
    (lambda: __import__("kdops").PLDLoss(), lambda g: (torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g), torch.tensor([0, 1, 2, 3]))),
    (lambda: __import__("kdops").MaxSim(), lambda g: (torch.randn(2, 3, 8, generator=g), torch.randn(5, 4, 8, generator=g))),
    (lambda: __import__("kdops").PlackettLuceLoss(top_k=3), lambda g: (torch.randn(4, 5, generator=g), torch.stack([torch.randperm(5, generator=g) for _ in range(4)]))),
]


@pytest.mark.parametrize("make_module,make_inputs", MODULES, ids=["MarginMSELoss", "ListMLELoss", "ListwiseKDLoss", "PLDLoss", "MaxSim", "PlackettLuceLoss"])
def test_modules_run_and_refuse_bad_input(make_module, make_inputs):
    module = make_module()
    inputs = make_inputs(torch.Generator().manual_seed(7))
    out = module(*inputs)
    assert torch.isfinite(out).all()
    with pytest.raises((TypeError, ValueError)):
        module(inputs[0].long(), *inputs[1:])


# --- no parallel region for small calls (issue #30) -----------------------------------------------


def _other_threads_cpu_ns() -> int | None:
    """CPU time so far of this process's threads other than the calling one (Linux schedstat),
    or None where /proc does not give it."""
    import os
    import threading

    me, total = threading.get_native_id(), 0
    try:
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != me:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
    except OSError:
        return None
    return total


def _small_and_large_calls():
    g = torch.Generator().manual_seed(0)

    def listmle(b, n):
        s, r = torch.randn(b, n, generator=g).requires_grad_(), torch.randint(0, 5, (b, n), generator=g).float()
        return lambda: kdops.listmle(s, r).backward()

    def kd(b, n):
        s, t = torch.randn(b, n, generator=g).requires_grad_(), torch.randn(b, n, generator=g)
        return lambda: kdops.listwise_kd_loss(s, t, 2.0).backward()

    def pld(b, n):
        s, t = torch.randn(b, n, generator=g).requires_grad_(), torch.randn(b, n, generator=g)
        y = torch.randint(0, n, (b,), generator=g)
        return lambda: kdops.pld_loss(s, t, y, 2.0).backward()

    # (name, small call, large call): small = the ListMLE B=256 n=64 and the like (16k
    # items, ~0.1-0.2 ms; below torch's own parallel grain, so only kdops could start a region);
    # large = past 2 x 1.5 ms of estimated work (csrc/cpu/parallel_grain.h).
    return [("listmle", listmle(256, 64), listmle(1024, 640)), ("listwise_kd", kd(256, 64), kd(4096, 640)),
            ("pld", pld(256, 64), pld(1024, 640))]


@pytest.mark.parametrize("which", range(3), ids=["listmle", "listwise_kd", "pld"])
def test_small_calls_run_on_the_calling_thread_alone(which):
    """With a core taken by another process, a parallel region waits a whole time slice for its
    descheduled thread: ListMLE B=256 n=64 went from 0.11 ms to 6.8 ms a call. So work below a
    time slice runs on the calling thread alone (no parallel region: the other threads get no
    CPU time), and large calls still use every thread."""
    if _other_threads_cpu_ns() is None:
        pytest.skip("per-thread CPU times need Linux's /proc")
    name, small, large = _small_and_large_calls()[which]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        small(), large()
        time.sleep(0.5)  # OpenMP workers spin a while after a region before they sleep
        before = _other_threads_cpu_ns()
        for _ in range(100):
            small()
        assert _other_threads_cpu_ns() - before < 1e6, f"{name}: other threads ran during small calls"
        before = _other_threads_cpu_ns()
        for _ in range(3):
            large()
        assert _other_threads_cpu_ns() - before > 1e6, f"{name}: a large call ran on one thread"
    finally:
        torch.set_num_threads(threads)
