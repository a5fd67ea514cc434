"""The CUDA kernels on the CUDA simulator (torch.ops.kdops_sim, built by `make test`): the
properties the op test files cannot show by comparing values with the reference.

- torch.ops.kdops_sim has exactly the ops and schemas of torch.ops.kdops;
- every kernel gives bit-identical results under shuffled thread and block orders (our
  kernels promise determinism: a missing barrier or a race shows up as a different result);
- on a small device (2 SMs, 48 KiB shared memory) the grid-stride loops run and MaxSim's
  shared-memory limit is reported by name.
The op test files run all their cases on the `sim` backend too (tests/helpers.py)."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

import kdops
from kdops import reference
from kdops.ops import built_with_simulator
from tests.helpers import assert_close, sim_schedule, simulated
from tests.op_cases import OP_CASES

if not built_with_simulator():
    # `make test` builds the simulator (KDOPS_SIM=1) and must not skip these silently.
    assert os.environ.get("KDOPS_SIM") != "1", "KDOPS_SIM=1 but kdops._C_sim was not built"
    pytest.skip("kdops._C_sim not built (build with KDOPS_SIM=1)", allow_module_level=True)

from kdops import _C_sim  # noqa: E402

cases = pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)


def _schemas(namespace: str) -> dict[str, str]:
    prefix = f"{namespace}::"
    return {
        str(s.name).removeprefix(prefix): str(s).replace(prefix, "", 1)
        for s in torch._C._jit_get_all_schemas()
        if str(s.name).startswith(prefix)
    }


def test_sim_ops_have_exactly_the_schemas_of_the_kdops_ops():
    ours, sim = _schemas("kdops"), _schemas("kdops_sim")
    assert len(ours) == 18
    assert sim == ours


def test_every_sim_op_has_a_cpu_kernel_and_autograd():
    """Every op has a CUDA kernel, which runs on the simulator."""
    for name in _schemas("kdops_sim"):
        op = f"kdops_sim::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Autograd"), op
    ops = kdops.build_info()["ops"]
    assert all("sim" in backends for backends in ops.values())


@contextlib.contextmanager
def _device(name: str):
    _C_sim.set_device(name)
    try:
        yield
    finally:
        _C_sim.set_device("h100")


def _run(case, args, kwargs):
    leaves = [a.detach().clone().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a for a in args]
    out = case.kdops_fn(*leaves, **kwargs)
    wrt = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad((out.float() * torch.linspace(0.5, 1.5, out.numel()).view(out.shape)).sum(), wrt)
    return [out.detach(), *grads]


def _assert_same_bits(expected, actual, what):
    for e, a in zip(expected, actual):
        assert e.dtype == a.dtype and e.shape == a.shape, what
        # Bitwise, NaN included: compare the raw bytes.
        assert torch.equal(e.view(-1).view(torch.uint8), a.view(-1).view(torch.uint8)), what


@cases
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_shuffled_thread_and_block_orders_give_bit_identical_results(case, dtype):
    """Forward and backward of every kernel, under the in-order schedule and 5 seeded shuffles
    of the threads between barriers and of the blocks of each grid."""
    args, kwargs = case.make(torch.Generator().manual_seed(7), 40, "cpu", dtype)
    with simulated():
        expected = _run(case, args, kwargs)
        for seed in range(1, 6):
            with sim_schedule("random", seed):
                _assert_same_bits(expected, _run(case, args, kwargs), f"{case.name}, schedule seed {seed}")


def test_shuffles_cover_multi_block_reductions_and_long_rows():
    """The paths the small random cases do not take: Margin-MSE's grid sum over many blocks, the
    per-row block scans over several tiles, the at::sort path of long rows (n > 4096), listwise
    KD's block per row, and the warp-per-row kernels (8 keys a lane: sort, scans, permutation
    check, gradients) of rows over two blocks."""
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(700, 9, generator=g), torch.randn(700, 9, generator=g)
    scores, relevance = torch.randn(3, 5000, generator=g), torch.randint(0, 4, (3, 5000), generator=g).float()
    target = torch.tensor([4999, 0, 17])
    # 9 rows of 200: a warp per row (8 keys a lane) over two blocks of 8 warps.
    warp_scores, warp_relevance = torch.randn(9, 200, generator=g), torch.randint(0, 4, (9, 200), generator=g).float()
    warp_ranking = torch.stack([torch.randperm(200, generator=g) for _ in range(9)])

    def run():
        s, sc = student.clone().requires_grad_(), scores.clone().requires_grad_()
        outs = [kdops.margin_mse(s, teacher, reduction="sum"), kdops.listmle(sc, relevance, top_k=700),
                kdops.pld_loss(sc, relevance, target, temperature=0.5), kdops.listwise_kd_loss(sc, relevance)]
        ws = warp_scores.clone().requires_grad_()
        outs += [kdops.listmle(ws, warp_relevance), kdops.plackett_luce_loss(ws, warp_ranking),
                 kdops.listwise_kd_loss(ws, warp_relevance)]
        grads = torch.autograd.grad(sum(o for o in outs), [s, sc, ws])
        return [o.detach() for o in outs] + list(grads)

    with simulated():
        expected = run()
        for seed in range(1, 6):
            with sim_schedule("random", seed):
                _assert_same_bits(expected, run(), f"schedule seed {seed}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_margin_mse_sums_are_bit_identical_on_every_device(dtype):
    """Margin-MSE's grid (and so the order its grid sum adds in) depends on the work alone, not on
    the device's SM count: the 2-SM preset and the H100 preset give the same bits, forward and
    backward, on a sum over many blocks."""
    g = torch.Generator().manual_seed(11)
    student, teacher = torch.randn(1500, 9, generator=g).to(dtype), torch.randn(1500, 9, generator=g).to(dtype)
    mask = torch.rand(1500, 9, generator=g) > 0.2

    def run():
        s = student.clone().requires_grad_()
        outs = [kdops.margin_mse(s, teacher, mask=mask), kdops.margin_mse(s, teacher, reduction="sum")]
        return [o.detach() for o in outs] + list(torch.autograd.grad(sum(outs), [s]))

    with simulated():
        with _device("h100"):
            expected = run()
        with _device("small"):
            _assert_same_bits(expected, run(), "small device against h100")


def test_small_device_runs_the_grid_stride_loops():
    """2 SMs: MaxSim's grid (64 blocks) strides over more work than it holds, and Margin-MSE's
    (set by the work: 3 blocks of 2048 terms here) runs there as on any device; the results
    match the reference."""
    g = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(600, 8, generator=g, dtype=torch.float64), torch.randn(600, 8, generator=g, dtype=torch.float64)
    Q = torch.randn(9, 5, 16, generator=g, dtype=torch.float64)
    D = torch.randn(11, 7, 16, generator=g, dtype=torch.float64)
    with simulated(), _device("small"):
        s, q, d = (t.clone().requires_grad_() for t in (student, Q, D))
        loss = kdops.margin_mse(s, teacher)
        scores = kdops.maxsim(q, d)
        (loss + scores.sum()).backward()
    s_ref, q_ref, d_ref = (t.clone().requires_grad_() for t in (student, Q, D))
    loss_ref, scores_ref = reference.margin_mse(s_ref, teacher), reference.maxsim(q_ref, d_ref)
    (loss_ref + scores_ref.sum()).backward()
    assert_close(loss, loss_ref, torch.float64)
    assert_close(scores, scores_ref, torch.float64, scale=16 * 5)
    for ours, ref in ((s, s_ref), (q, q_ref), (d, d_ref)):
        assert_close(ours.grad, ref.grad, torch.float64, scale=100)


@pytest.mark.parametrize(
    "dtype,largest",
    [(torch.float32, 191), (torch.float64, 95), (torch.float16, 64), (torch.bfloat16, 64)],
    ids=lambda v: str(v).removeprefix("torch."),
)
def test_maxsim_takes_any_embedding_size(dtype, largest):
    """48 KiB of shared memory holds two 32-token tiles of d + 1 accumulators up to d = largest
    (fp32/fp64), or, for the fp16/bf16 tensor-core kernel, 64 query rows and two 64-token doc
    tiles (double-buffered) of 2-byte features (rows padded to a multiple of 16, + 8) beside
    64 x 64 fp32 similarities. A wider d ran into "supports d up to {largest}" (d <= 907 fp32,
    544 fp16 on an H100; no limit on the CPU); now the SIMT kernel takes the features in chunks
    (fp16/bf16 past their tiles run there, in fp32), so every d runs on every device, and for
    fp32/fp64 with the bits of the H100 preset, where one chunk holds all of d: the chunks add
    each dot product's terms in the same order."""
    score_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    for d in (largest, largest + 1, 3 * largest + 7):
        # Multiples of 1/2 in [-1, 1]: exact dot products in every dtype, so the argmax (ties to
        # the first) and the gradients do not depend on rounding.
        gen = torch.Generator().manual_seed(d)
        Q = (torch.randint(-2, 3, (2, 33, d), generator=gen) / 2).to(dtype).requires_grad_()
        D = (torch.randint(-2, 3, (3, 40, d), generator=gen) / 2).to(dtype).requires_grad_()
        with simulated(), _device("small"):
            small = kdops.maxsim(Q, D)
            grads = torch.autograd.grad(small.sum(), (Q, D))
        Q64, D64 = Q.detach().double().requires_grad_(), D.detach().double().requires_grad_()
        expected = reference.maxsim(Q64, D64)
        expected_grads = torch.autograd.grad(expected.sum(), (Q64, D64))
        assert_close(small, expected, score_dtype, scale=3 * d)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, dtype, scale=3)
        if dtype in (torch.float32, torch.float64):
            with simulated():
                assert torch.equal(kdops.maxsim(Q, D), small)


def test_schedule_and_device_arguments_are_checked():
    with pytest.raises(ValueError, match="device must be 'h100' or 'small'"):
        _C_sim.set_device("a100")
    with pytest.raises(ValueError, match="threads must be 'in_order', 'random', 'run_ahead', 'round_robin' or 'pct'"):
        _C_sim.set_schedule(1, "depth_first")
    with pytest.raises(ValueError, match="pct_depth must be at least 1"):
        _C_sim.set_schedule(1, "pct", pct_depth=0)
    assert _C_sim.build_info()["simulator"] is True
