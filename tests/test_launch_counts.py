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
LENGTHS_CHECK = ["aten::ge", "aten::le", "aten::logical_and_", "aten::all", "aten::_assert_async"]


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

# name: (call, kernels, torch ops). Why each is there:
#   zeros (margin_mse): the grid sum's arrival counter, zeroed before the one kernel.
#   zeros (plackett_luce_loss): the permutation check's bitmap (the user's ranking only);
#     all + _assert_async: the per-row permutation flags asserted on the device (no host read).
#   LENGTHS_CHECK / target check: lengths in [0, n], target in [0, C), asserted on the device.
#   mean / sum: the per-row losses reduced ('none' needs none).
#   listmle / pld_loss: 2 kernels, the in-block sort (the ranking) then the loss.
#   *_and_grads: the forward op's kernels and torch ops, `ones` (the unit upstream gradient),
#     then the backward op's: the argument checks run twice (a fused kernel is still to write).
CASES = {
    "margin_mse mean": (lambda: ops.margin_mse(S, T, None, "mean"), 1, ["aten::zeros"]),
    "margin_mse none": (lambda: ops.margin_mse(S, T, None, "none"), 1, ["aten::zeros"]),
    "margin_mse_backward mean": (lambda: ops.margin_mse_backward(ONE, S, T, None, torch.tensor(B * (N - 1)), "mean"), 1, []),
    "margin_mse_pairwise sum": (lambda: ops.margin_mse_pairwise(SP, SN, TP, TN, "sum"), 1, ["aten::zeros"]),
    "margin_mse_pairwise_backward mean": (lambda: ops.margin_mse_pairwise_backward(ONE, SP, SN, TP, TN, "mean"), 1, []),
    "plackett_luce_loss mean": (lambda: ops.plackett_luce_loss(S, PERM, None, None, None, "mean"), 1,
                                ["aten::_assert_async", "aten::all", "aten::mean", "aten::zeros"]),
    "plackett_luce_loss lengths none": (lambda: ops.plackett_luce_loss(S, IN_ORDER, None, LEN, None, "none"), 1,
                                        LENGTHS_CHECK + ["aten::_assert_async", "aten::all", "aten::zeros"]),
    "plackett_luce_loss_backward mean": (lambda: ops.plackett_luce_loss_backward(ONE, S, PERM, T, None, None, "mean", True), 1, []),
    "listmle sum": (lambda: ops.listmle(S, T, None, 3, "sum"), 2, ["aten::sum"]),
    "listmle lengths mean": (lambda: ops.listmle(S, T, LEN, None, "mean"), 2, LENGTHS_CHECK + ["aten::mean"]),
    "pld_loss mean": (lambda: ops.pld_loss(S, T, TARGET, 2.0, "mean"), 2, LENGTHS_CHECK + ["aten::mean"]),
    "pld_loss_backward mean": (lambda: ops.pld_loss_backward(ONE, S, T, PERM, 2.0, "mean", True), 1, []),
    "listwise_kd_loss mean": (lambda: ops.listwise_kd_loss(S, T, None, 1.0, 2.0, "mean"), 1, ["aten::mean"]),
    "listwise_kd_loss_backward lengths none": (lambda: ops.listwise_kd_loss_backward(torch.ones(B), S, T, LEN, 1.0, 2.0, "none", True), 1,
                                               LENGTHS_CHECK),
    "listwise_kd_loss_and_grads lengths mean": (lambda: ops.listwise_kd_loss_and_grads(S, T, LEN, 1.0, 2.0, "mean", True), 2,
                                                2 * LENGTHS_CHECK + ["aten::mean", "aten::ones"]),
    "listmle_and_grads sum": (lambda: ops.listmle_and_grads(S, T, None, 3, "sum"), 3, ["aten::ones", "aten::sum"]),
    "pld_loss_and_grads mean": (lambda: ops.pld_loss_and_grads(S, T, TARGET, 2.0, "mean", False), 3,
                                LENGTHS_CHECK + ["aten::mean", "aten::ones"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_launches_and_torch_ops_per_call(name):
    call, kernels, torch_ops = CASES[name]
    assert counted(call) == (kernels, sorted(torch_ops))


def test_the_counts_see_launches_and_casts():
    """The counter can fail: a half-precision PL loss adds its cast (aten::_to_copy)."""
    kernels, torch_ops = counted(lambda: ops.listwise_kd_loss(S.half(), T.half(), None, 1.0, 2.0, "sum"))
    assert kernels == 1 and "aten::_to_copy" in torch_ops and "aten::sum" in torch_ops
