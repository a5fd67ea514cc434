"""MaxSim's fp32 forward on TF32 tensor cores (the CUDA kernels; here on the simulator): taken only
while torch.backends.cuda.matmul.allow_tf32 is set, else the exact SIMT kernel.

TF32 keeps fp32's 8 exponent bits and 10 of its 23 mantissa bits. Each operand is rounded to
nearest once (relative error at most u = 2^-11), so a product of two rounded operands is off by
at most (2u + u^2) |q| |d|; the fp32 sums of d products and of Lq maxima add at most
(d + Lq) 2^-24 of the sums of magnitudes. A max moves by at most the largest error of its
candidates, so |score - exact| <= (2^-10 + 2^-22 + (d + Lq) 2^-24) * sum_i max_j <|Q_i|, |D_j|>
(divided by the query length when normalised). Inputs that are multiples of 1/2 with few bits
are TF32 values already: then every product and sum is exact, and so are scores and argmax."""

from __future__ import annotations

import pytest
import torch

from kdops import reference
from tests.helpers import assert_close, cuda_kernel_devices, ops
from tests.raw_calls import oracle_maxsim

LAYOUTS = ["all-pairs", "per-query", "packed"]
LENGTHS = [70, 0, 13, 150]  # packed docs: over one and two 64-token tiles, and an empty one


@pytest.fixture
def allow_tf32(request):
    """Sets torch.backends.cuda.matmul.allow_tf32 to the test's parameter, restored afterwards."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = request.param
    try:
        yield request.param
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


tf32_on = pytest.mark.parametrize("allow_tf32", [True], indirect=True, ids=["tf32"])


def _inputs(layout, dim, device, exact, seed=0):
    """Raw-op arguments (Q, D, q_mask, d_mask, doc_offsets) in fp32: 5 queries of 70 tokens (two
    row chunks, partial query groups); `exact`: multiples of 1/2 in [-2, 2] (TF32 values)."""
    g = torch.Generator().manual_seed(seed)

    def values(*shape):
        x = torch.randint(-4, 5, shape, generator=g) / 2 if exact else torch.randn(shape, generator=g)
        return x.float().to(device)

    Q = values(5, 70, dim)
    q_mask = (torch.rand(5, 70, generator=g) < 0.9).to(device)
    if layout == "packed":
        offsets = torch.tensor([0] + LENGTHS).cumsum(0).to(device)
        return Q, values(sum(LENGTHS), dim), q_mask, None, offsets
    shape = (3, 90) if layout == "all-pairs" else (5, 2, 90)
    return Q, values(*shape, dim), q_mask, (torch.rand(shape, generator=g) < 0.8).to(device), None


def _error_bound(Q, D, q_mask, doc_offsets, length_normalize):
    """The bound of the module docstring for every score [Nq, K] (float64)."""
    Qa = Q.double().abs().cpu()
    if doc_offsets is not None:
        D, _ = reference.pad_packed(D.cpu(), doc_offsets.cpu())
    Da = D.double().abs().cpu()
    products = torch.einsum("qid,kjd->qkij" if Da.dim() == 3 else "qid,qkjd->qkij", Qa, Da)
    largest = products.amax(-1)  # (padding rows are zeros)
    dim, lq = Q.shape[2], Q.shape[1]
    bound = (2**-10 + 2**-22 + (dim + lq) * 2**-24) * largest.sum(-1)
    if length_normalize:
        bound = bound / q_mask.cpu().sum(1, keepdim=True).clamp(min=1)
    return bound


@cuda_kernel_devices
@tf32_on
@pytest.mark.parametrize("dim", [18, 40, 64], ids=["d18-plain-loads", "d40-zero-filled-to-48", "d64-vector-loads"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tf32_values_give_exact_scores_and_argmax(device, allow_tf32, layout, dim):
    """d = 18 (not a multiple of 4 floats) takes the plain-load staging, the TF32 kernel's own
    since fp16/bf16 moved to mma.sync; 40 and 64 the cp.async one."""
    args = _inputs(layout, dim, device, exact=True)
    scores, argmax = ops().maxsim(*args, False, True)
    expected_scores, expected_argmax = oracle_maxsim(*args, False)
    assert scores.dtype == torch.float32
    assert torch.equal(scores.cpu().double(), expected_scores)
    assert torch.equal(argmax.cpu(), expected_argmax)
    scores_only, none = ops().maxsim(*args, False, False)
    assert torch.equal(scores_only, scores) and none.shape == (0,)


@cuda_kernel_devices
@tf32_on
@pytest.mark.parametrize("length_normalize", [False, True])
@pytest.mark.parametrize("dim", [40, 64], ids=["d40-scalar-loads", "d64-vector-loads"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tf32_scores_within_the_tf32_bound(device, allow_tf32, layout, dim, length_normalize):
    """Random fp32 inputs: within the bound of TF32 rounding, and not the exact kernel's result
    (the flag did switch the path)."""
    args = _inputs(layout, dim, device, exact=False, seed=dim)
    scores = ops().maxsim(*args, length_normalize, False)[0].cpu().double()
    expected = oracle_maxsim(*args, length_normalize)[0]
    bound = _error_bound(args[0], args[1], args[2], args[4], length_normalize)
    assert torch.all((scores - expected).abs() <= bound), float(((scores - expected).abs() - bound).max())
    torch.backends.cuda.matmul.allow_tf32 = False
    exact = ops().maxsim(*args, length_normalize, False)[0].cpu().double()
    assert not torch.equal(exact, scores)


@cuda_kernel_devices
@pytest.mark.parametrize("allow_tf32", [False], indirect=True, ids=["no-tf32"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_the_flag_fp32_is_exact(device, allow_tf32, layout):
    """The SIMT kernel: fp32 products of the inputs themselves, within fp32 rounding of the
    float64 reference, far tighter than TF32's bound."""
    args = _inputs(layout, 40, device, exact=False, seed=1)
    scores = ops().maxsim(*args, False, False)[0]
    expected = oracle_maxsim(*args, False)[0]
    assert_close(scores, expected, torch.float32, scale=70 * 40)
    bound = _error_bound(args[0], args[1], args[2], args[4], False)
    # TF32-sized errors would show: fp32's are at least 2^13 times smaller than the bound.
    assert torch.all((scores.cpu().double() - expected).abs() <= bound / 64)


@pytest.mark.parametrize("allow_tf32", [True], indirect=True, ids=["tf32"])
def test_tf32_is_a_permission_a_d_too_wide_for_its_tiles_runs_exact(allow_tf32):
    """On the simulator's small device (48 KiB of shared memory) TF32 tiles hold d <= 32: d = 32
    runs on TF32 tensor cores, d = 33 and the exact kernel's largest d = 191 run exact (the
    result of the flag unset, bit for bit), as torch's allow_tf32 permits TF32 and does not
    require it."""
    from kdops.ops import built_with_simulator

    if not built_with_simulator():
        pytest.skip("needs kdops._C_sim")
    from kdops import _C_sim

    g = torch.Generator().manual_seed(3)
    _C_sim.set_device("small")
    try:
        for dim, tf32 in ((32, True), (33, False), (191, False)):
            Q, D = torch.randn(2, 5, dim, generator=g), torch.randn(3, 7, dim, generator=g)
            torch.backends.cuda.matmul.allow_tf32 = True
            allowed = torch.ops.kdops_sim.maxsim(Q, D, None, None, None, False, False)[0]
            torch.backends.cuda.matmul.allow_tf32 = False
            exact = torch.ops.kdops_sim.maxsim(Q, D, None, None, None, False, False)[0]
            assert torch.equal(allowed, exact) != tf32, dim
    finally:
        _C_sim.set_device("h100")
