"""Kernel launches and torch ops per call of the Margin-MSE, Plackett-Luce family and serving
MaxSim CUDA ops, counted on the simulator: the kernels by its launch counter
(kdops._C_sim.launch_count()), the torch ops by the profiler (the ATen ops the op's host code
dispatches, each a launch on a GPU, views, allocations and no-op `to` left out). The table says why each is needed; a change that
adds one must change the table, and say why."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile


_C_sim = pytest.importorskip("kdops._C_sim")
ops = torch.ops.kdops_sim

# Dispatched by host code but no device work: allocations, views, and `to` to the dtype a tensor
# already has (a real cast shows up as aten::_to_copy beneath it, and is counted).
NOT_LAUNCHES = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::as_strided",
                "aten::reshape", "aten::_reshape_alias", "aten::expand", "aten::unsqueeze", "aten::alias",
                "aten::detach", "aten::to", "aten::resize_"}


def counted(fn) -> tuple[int, list[str]]:
    """(kernel launches, sorted torch ops) of fn(), run once before: the first call on a stream
    allocates the stream's grid-sum counter (cuda/grid_scratch.h), once per process."""
    fn()
    before = _C_sim.launch_count()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    kernels = _C_sim.launch_count() - before
    torch_ops = []
    for e in prof.events():
        parent = e.cpu_parent
        if parent is None:
            continue
        if parent.name.startswith("kdops_sim::") and e.name not in NOT_LAUNCHES:
            torch_ops.append(e.name)
        elif e.name == "aten::_to_copy" and parent.name == "aten::to" and parent.cpu_parent is not None \
                and parent.cpu_parent.name.startswith("kdops_sim::"):
            torch_ops.append(e.name)
    return kernels, sorted(torch_ops)


g = torch.Generator().manual_seed(0)
B, N = 4, 6
S, T = torch.randn(B, N, generator=g), torch.randn(B, N, generator=g)
LEN = torch.tensor([6, 3, 0, 5])
PERM = torch.stack([torch.randperm(N, generator=g) for _ in range(B)])
TARGET = torch.tensor([0, 5, 2, 1])
ONE = torch.tensor(1.0)
TWO, TWO64 = torch.tensor(2.0, requires_grad=True), torch.tensor(2.0, dtype=torch.float64)  # learned temperatures
SP, SN, TP, TN = (torch.randn(B, generator=g) for _ in range(4))
IN_ORDER = torch.arange(N).repeat(B, 1)  # a permutation of every row's valid prefix, whatever its length

SM, TM = torch.randn(700, 9, generator=g), torch.randn(700, 9, generator=g)  # 5600 terms: 3 blocks
PERMM = torch.stack([torch.randperm(9, generator=g) for _ in range(700)])  # 700 rows: 88 blocks of 8
LONG = 300  # past the warp-per-row kernels' 256 items: a block per row
SL, TL = torch.randn(B, LONG, generator=g), torch.randn(B, LONG, generator=g)
PERML = torch.stack([torch.randperm(LONG, generator=g) for _ in range(B)])

# name: (call, kernels, torch ops). Why each is there:
#   margin_mse: one kernel computes the per-term losses and, where the terms (B*N) need more than
#     one block of 2048, reduces them over the grid (grid_sum.cuh) on the stream's arrival
#     counter, which the kernel leaves at zero (cuda/grid_scratch.h): no launch zeroes it.
#   Plackett-Luce family: one kernel computes everything a call asks for (ListMLE's / PLD's
#     ranking, sorted in a warp's registers up to 256 items, else in a block's shared memory; the
#     loss; the gradients; *_and_grads is the forward's call plus the gradients) and, at its end,
#     reduces the rows' losses ('mean' / 'sum') and their index checks over the grid (the last
#     block of grid_sum.cuh; the arrival counter is kept per stream and left at zero by the
#     kernel, so no launch zeroes it).
#   _assert_async: a flag that kernel wrote, asserted on the device (no host read): lengths in
#     [0, n] and PLD's target in [0, C) (one flag), a user's ranking a permutation (another), each
#     temperature given as a tensor (read by the kernel in device memory) positive and finite.
#   tensor_temperature *_and_grads: the temperatures' gradients come from the same kernel.
#   Serving MaxSim (maxsim_quantized, maxsim_residual): one kernel, whatever the pairing. Each
#     per-token scale tensor's values are checked on the device in one pass (>= 0 and finite:
#     aminmax, then ge and le on its two scalars, logical_and_, _assert_async), and residual codes' range (ge, lt, logical_and_, all,
#     _assert_async). A float32 query is rounded to fp16 by the kernel, which flags a value past
#     fp16's range as it stages it (grid_none.cuh, on the stream's words the kernel leaves at
#     zero): one more _assert_async, no pass of its own over Q.
ASSERT = ["aten::_assert_async"]
SCALE_CHECK = ["aten::aminmax", "aten::ge", "aten::le", "aten::logical_and_", *ASSERT]
CODES_CHECK = ["aten::ge", "aten::lt", "aten::logical_and_", "aten::all", *ASSERT]
QF, QS = torch.randn(10, 1, 8, generator=g), torch.rand(10, 1, generator=g)  # Lq = 1: 3 groups of 4 queries
QI = torch.randint(-127, 128, (10, 1, 8), generator=g).to(torch.int8)
DI, DS = torch.randint(-127, 128, (5, 3, 8), generator=g).to(torch.int8), torch.rand(5, 3, generator=g)  # x 5 docs: 15 blocks
CODES = torch.randint(0, 4, (5, 3), generator=g, dtype=torch.int32)
RESIDUALS = torch.randint(0, 256, (5, 3, 2), generator=g).to(torch.uint8)
CENTROIDS, BUCKETS = torch.randn(4, 8, generator=g), torch.randn(4, generator=g)
CASES = {
    "margin_mse mean": (lambda: ops.margin_mse(S, T, None, "mean"), 1, []),
    "margin_mse none": (lambda: ops.margin_mse(S, T, None, "none"), 1, []),
    "margin_mse many blocks mean": (lambda: ops.margin_mse(SM, TM, None, "mean"), 1, []),
    "margin_mse_backward mean": (lambda: ops.margin_mse_backward(ONE, S, T, None, torch.tensor(B * (N - 1)), "mean"), 1, []),
    "margin_mse_pairwise sum": (lambda: ops.margin_mse_pairwise(SP, SN, TP, TN, "sum"), 1, []),
    "margin_mse_pairwise_backward mean": (lambda: ops.margin_mse_pairwise_backward(ONE, SP, SN, TP, TN, "mean"), 1, []),
    "plackett_luce_loss mean": (lambda: ops.plackett_luce_loss(S, PERM, None, None, None, "mean"), 1, ASSERT),
    "plackett_luce_loss many blocks mean": (lambda: ops.plackett_luce_loss(SM, PERMM, None, None, None, "mean"), 1, ASSERT),
    "plackett_luce_loss lengths none": (lambda: ops.plackett_luce_loss(S, IN_ORDER, None, LEN, None, "none"), 1,
                                        ASSERT + ASSERT),
    "plackett_luce_loss long rows mean": (lambda: ops.plackett_luce_loss(SL, PERML, None, None, None, "mean"), 1, ASSERT),
    "plackett_luce_loss_backward mean": (lambda: ops.plackett_luce_loss_backward(ONE, S, PERM, T, None, None, "mean", True), 1, []),
    "listmle sum": (lambda: ops.listmle(S, T, None, 3, "sum"), 1, []),
    "listmle lengths mean": (lambda: ops.listmle(S, T, LEN, None, "mean"), 1, ASSERT),
    "listmle long rows sum": (lambda: ops.listmle(SL, TL, None, None, "sum"), 1, []),
    "pld_loss mean": (lambda: ops.pld_loss(S, T, TARGET, 2.0, "mean"), 1, ASSERT),
    "pld_loss_backward mean": (lambda: ops.pld_loss_backward(ONE, S, T, PERM, 2.0, "mean", True), 1, []),
    "listwise_kd_loss mean": (lambda: ops.listwise_kd_loss(S, T, None, 1.0, 2.0, "mean"), 1, []),
    "listwise_kd_loss long rows mean": (lambda: ops.listwise_kd_loss(SL, TL, None, 1.0, 2.0, "mean"), 1, []),
    "listwise_kd_loss_backward lengths none": (lambda: ops.listwise_kd_loss_backward(torch.ones(B), S, T, LEN, 1.0, 2.0, "none", True), 1,
                                               ASSERT),
    "listwise_kd_loss_and_grads mean": (lambda: ops.listwise_kd_loss_and_grads(S, T, None, 1.0, 2.0, "mean", False), 1, []),
    "listwise_kd_loss_and_grads long rows mean": (lambda: ops.listwise_kd_loss_and_grads(SL, TL, None, 1.0, 2.0, "mean", False),
                                                  1, []),
    "listwise_kd_loss_and_grads lengths mean": (lambda: ops.listwise_kd_loss_and_grads(S, T, LEN, 1.0, 2.0, "mean", True), 1,
                                                ASSERT),
    "listmle_and_grads sum": (lambda: ops.listmle_and_grads(S, T, None, 3, "sum"), 1, []),
    "listmle_and_grads long rows sum": (lambda: ops.listmle_and_grads(SL, TL, None, None, "sum"), 1, []),
    "pld_loss_and_grads mean": (lambda: ops.pld_loss_and_grads(S, T, TARGET, 2.0, "mean", False), 1, ASSERT),
    "pld_loss_and_grads long rows mean": (lambda: ops.pld_loss_and_grads(SL, TL, TARGET, 2.0, "mean", True), 1, ASSERT),
    "pld_loss_and_grads learned temperature mean": (
        lambda: ops.pld_loss_and_grads.tensor_temperature(S, T, TARGET, TWO, "mean", False), 1, ASSERT + ASSERT),
    "listwise_kd_loss_and_grads learned temperatures none": (
        lambda: ops.listwise_kd_loss_and_grads.tensor_temperature(S, T, None, TWO, TWO64, "none", True), 1,
        ASSERT + ASSERT),
    "listwise_kd_loss_and_grads learned temperatures long rows sum": (
        lambda: ops.listwise_kd_loss_and_grads.tensor_temperature(SL, TL, None, TWO, TWO, "sum", False), 1,
        ASSERT + ASSERT),
    "maxsim_quantized float query": (lambda: ops.maxsim_quantized(QF, None, DI, DS, None, None, False, True), 1,
                                     SCALE_CHECK + ASSERT),
    "maxsim_quantized int8": (lambda: ops.maxsim_quantized(QI, QS, DI, DS, None, None, False, False), 1,
                              SCALE_CHECK + SCALE_CHECK),
    "maxsim_residual": (lambda: ops.maxsim_residual(QF, CODES, RESIDUALS, CENTROIDS, BUCKETS, None, None, False, True), 1,
                        CODES_CHECK + ASSERT),
}


@pytest.mark.parametrize("name", list(CASES))
def test_launches_and_torch_ops_per_call(name):
    call, kernels, torch_ops = CASES[name]
    assert counted(call) == (kernels, sorted(torch_ops))


def test_the_counts_see_copies_and_sorts():
    """The counter can fail: a non-contiguous input adds its copy, and rows too long for the
    kernels' in-block sort (past 4096 items) add torch's sort."""
    strided = S.t().contiguous().t()
    kernels, torch_ops = counted(lambda: ops.listmle(strided, T, None, None, "sum"))
    assert kernels == 1 and "aten::contiguous" in torch_ops
    huge = torch.randn(1, 5000, generator=g)
    kernels, torch_ops = counted(lambda: ops.listmle(huge, huge, None, None, "sum"))
    assert kernels == 1 and "aten::sort" in torch_ops
