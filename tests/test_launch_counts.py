"""Kernel launches and torch ops per call of the Margin-MSE and Plackett-Luce family CUDA ops,
counted on the simulator: the kernels by its launch counter (kdops._C_sim.launch_count()), the
torch ops by the profiler (the ATen ops the op's host code dispatches, each a launch on a GPU,
views, allocations and no-op `to` left out). The table says why each is needed; a change that
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
# lengths / PLD target in range: per-row flags the kernel writes, asserted on the device
INDEX_FLAGS = ["aten::all", "aten::_assert_async"]


def counted(fn) -> tuple[int, list[str]]:
    """(kernel launches, sorted torch ops) of fn()."""
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
SP, SN, TP, TN = (torch.randn(B, generator=g) for _ in range(4))
IN_ORDER = torch.arange(N).repeat(B, 1)  # a permutation of every row's valid prefix, whatever its length

SM, TM = torch.randn(700, 9, generator=g), torch.randn(700, 9, generator=g)  # 5600 terms: 3 blocks
LONG = 300  # past the warp-per-row kernels' 256 items: a block per row
SL, TL = torch.randn(B, LONG, generator=g), torch.randn(B, LONG, generator=g)
PERML = torch.stack([torch.randperm(LONG, generator=g) for _ in range(B)])

# name: (call, kernels, torch ops). Why each is there:
#   zeros (margin_mse): the grid sum's arrival counter, zeroed before the one kernel, where the
#     terms (B*N) need more than one block of 2048 (one block sums them itself).
#   all + _assert_async (plackett_luce_loss): the per-row permutation flags its kernel writes,
#     asserted on the device (no host read); zeros: the long rows' permutation bitmap (rows of up
#     to 256 items keep it in the warp's shared memory).
#   INDEX_FLAGS: lengths in [0, n], target in [0, C), flagged per row by the kernel that reads
#     them and asserted on the device (a range check of their own took ge, le, logical_and_, all
#     and the assert).
#   mean / sum: the per-row losses reduced ('none' needs none).
#   Plackett-Luce family, rows of up to 256 items: one kernel computes everything the call asks
#     for (ranking, loss, gradients); *_and_grads is the forward's call plus the gradients, in the
#     same kernel. Longer rows: a ranking kernel (listmle / pld_loss), then the loss kernel or, for
#     *_and_grads and the backward ops, the gradient kernel, which also sums the loss.
CASES = {
    "margin_mse mean": (lambda: ops.margin_mse(S, T, None, "mean"), 1, []),
    "margin_mse none": (lambda: ops.margin_mse(S, T, None, "none"), 1, []),
    "margin_mse many blocks mean": (lambda: ops.margin_mse(SM, TM, None, "mean"), 1, ["aten::zeros"]),
    "margin_mse_backward mean": (lambda: ops.margin_mse_backward(ONE, S, T, None, torch.tensor(B * (N - 1)), "mean"), 1, []),
    "margin_mse_pairwise sum": (lambda: ops.margin_mse_pairwise(SP, SN, TP, TN, "sum"), 1, []),
    "margin_mse_pairwise_backward mean": (lambda: ops.margin_mse_pairwise_backward(ONE, SP, SN, TP, TN, "mean"), 1, []),
    "plackett_luce_loss mean": (lambda: ops.plackett_luce_loss(S, PERM, None, None, None, "mean"), 1,
                                ["aten::_assert_async", "aten::all", "aten::mean"]),
    "plackett_luce_loss lengths none": (lambda: ops.plackett_luce_loss(S, IN_ORDER, None, LEN, None, "none"), 1,
                                        INDEX_FLAGS + ["aten::_assert_async", "aten::all"]),
    "plackett_luce_loss long rows mean": (lambda: ops.plackett_luce_loss(SL, PERML, None, None, None, "mean"), 1,
                                          ["aten::_assert_async", "aten::all", "aten::mean", "aten::zeros"]),
    "plackett_luce_loss_backward mean": (lambda: ops.plackett_luce_loss_backward(ONE, S, PERM, T, None, None, "mean", True), 1, []),
    "listmle sum": (lambda: ops.listmle(S, T, None, 3, "sum"), 1, ["aten::sum"]),
    "listmle lengths mean": (lambda: ops.listmle(S, T, LEN, None, "mean"), 1, INDEX_FLAGS + ["aten::mean"]),
    "listmle long rows sum": (lambda: ops.listmle(SL, TL, None, None, "sum"), 2, ["aten::sum"]),
    "pld_loss mean": (lambda: ops.pld_loss(S, T, TARGET, 2.0, "mean"), 1, INDEX_FLAGS + ["aten::mean"]),
    "pld_loss_backward mean": (lambda: ops.pld_loss_backward(ONE, S, T, PERM, 2.0, "mean", True), 1, []),
    "listwise_kd_loss mean": (lambda: ops.listwise_kd_loss(S, T, None, 1.0, 2.0, "mean"), 1, ["aten::mean"]),
    "listwise_kd_loss long rows mean": (lambda: ops.listwise_kd_loss(SL, TL, None, 1.0, 2.0, "mean"), 1, ["aten::mean"]),
    "listwise_kd_loss_backward lengths none": (lambda: ops.listwise_kd_loss_backward(torch.ones(B), S, T, LEN, 1.0, 2.0, "none", True), 1,
                                               INDEX_FLAGS),
    "listwise_kd_loss_and_grads lengths mean": (lambda: ops.listwise_kd_loss_and_grads(S, T, LEN, 1.0, 2.0, "mean", True), 1,
                                                INDEX_FLAGS + ["aten::mean"]),
    "listmle_and_grads sum": (lambda: ops.listmle_and_grads(S, T, None, 3, "sum"), 1, ["aten::sum"]),
    "listmle_and_grads long rows sum": (lambda: ops.listmle_and_grads(SL, TL, None, None, "sum"), 2, ["aten::sum"]),
    "pld_loss_and_grads mean": (lambda: ops.pld_loss_and_grads(S, T, TARGET, 2.0, "mean", False), 1,
                                INDEX_FLAGS + ["aten::mean"]),
    "pld_loss_and_grads long rows mean": (lambda: ops.pld_loss_and_grads(SL, TL, TARGET, 2.0, "mean", True), 2,
                                          INDEX_FLAGS + ["aten::mean"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_launches_and_torch_ops_per_call(name):
    call, kernels, torch_ops = CASES[name]
    assert counted(call) == (kernels, sorted(torch_ops))


def test_the_counts_see_launches_and_casts():
    """The counter can fail: a half-precision PL loss adds its cast (aten::_to_copy)."""
    kernels, torch_ops = counted(lambda: ops.listwise_kd_loss(S.half(), T.half(), None, 1.0, 2.0, "sum"))
    assert kernels == 1 and "aten::_to_copy" in torch_ops and "aten::sum" in torch_ops
