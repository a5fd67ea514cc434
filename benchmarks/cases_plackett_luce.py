"""Plackett-Luce family cases, forward + backward in float32: PLD (B=256 C=100, B=256 C=1000,
B=1024 C=1000), ListMLE, listwise KD (with a float temperature, and with a learned one: a tensor
that requires grad) and the PL loss of a given ranking (B=256 n=64, B=4096 n=32), and on the
CPU ListMLE B=256 n=64 beside a busy process. The teacher is detached, as in distillation.

Peers (written inline so they run without the packages):
- "allrank": allRank's ``listMLE`` formula (sort by relevance, gather, reversed cumsum of exp
  after subtracting the row max, log(cumsum + eps) - score), without its random shuffle.
- "sentence-transformers": ``DistillKLDivLoss``'s computation, KLDivLoss(batchmean) of
  log_softmax(student / T) against softmax(teacher / T), times T^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import Case, Impl, busy_process, compiled, floor_impl, forward_backward
from kdops import reference

PLD_SHAPES = [(256, 100), (256, 1000), (1024, 1000)]
LIST_SHAPES = [(256, 64), (4096, 32)]
TEMPERATURE = 2.0


def _allrank_listmle(y_pred: torch.Tensor, y_true: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    y_true_sorted, indices = y_true.sort(descending=True, dim=-1)
    preds_sorted_by_true = torch.gather(y_pred, dim=1, index=indices)
    max_pred_values, _ = preds_sorted_by_true.max(dim=1, keepdim=True)
    preds_sorted_by_true_minus_max = preds_sorted_by_true - max_pred_values
    cumsums = torch.cumsum(preds_sorted_by_true_minus_max.exp().flip(dims=[1]), dim=1).flip(dims=[1])
    observation_loss = torch.log(cumsums + eps) - preds_sorted_by_true_minus_max
    return torch.mean(torch.sum(observation_loss, dim=1))


def _sentence_transformers_distill_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    student_log_probs = F.log_softmax(student / TEMPERATURE, dim=-1)
    teacher_probs = F.softmax(teacher / TEMPERATURE, dim=-1)
    return F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * TEMPERATURE**2


def _impls(ref_fn, kdops_fn, inputs, peers=(), floor=False) -> list[Impl]:
    """floor: add the x.sum() backward floor (the per-call cost at an op's smallest shape)."""
    impls = [
        Impl("reference", forward_backward(ref_fn, inputs)),
        Impl("compile", forward_backward(compiled(ref_fn), inputs)),
        Impl("kdops", forward_backward(kdops_fn, inputs)),
    ]
    impls += [Impl(name, forward_backward(fn, inputs)) for name, fn in peers]
    return impls + ([floor_impl(inputs)] if floor else [])


def _pld(device: torch.device, batch: int, classes: int) -> Case:
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(batch, classes, generator=gen).to(device).requires_grad_(),
        torch.randn(batch, classes, generator=gen).to(device) * 3,
        torch.randint(0, classes, (batch,), generator=gen).to(device),
    ]
    impls = _impls(
        lambda s, t, y: reference.pld_loss(s, t, y, TEMPERATURE),
        lambda s, t, y: kdops.pld_loss(s, t, y, TEMPERATURE),
        inputs,
        floor=(batch, classes) == PLD_SHAPES[0],
    )
    return Case("pld_loss", "PLD", f"B={batch} C={classes}", torch.float32, "fwd+bwd", impls)


def _listmle(device: torch.device, batch: int, n: int) -> Case:
    gen = torch.Generator().manual_seed(1)
    inputs = [
        torch.randn(batch, n, generator=gen).to(device).requires_grad_(),
        torch.randint(0, 5, (batch, n), generator=gen).to(device).float(),  # graded labels: ties
    ]
    impls = _impls(reference.listmle, kdops.listmle, inputs, peers=[("allrank", _allrank_listmle)],
                   floor=(batch, n) == LIST_SHAPES[0])
    return Case("listmle", "ListMLE", f"B={batch} n={n}", torch.float32, "fwd+bwd", impls)


def _listmle_beside_busy_process(device: torch.device) -> Case:
    """ListMLE B=256 n=64 while another process spins on one core (busy_process): a training job
    on a shared machine. A parallel region over work this small waits a whole time slice for the
    thread that lost its core; kdops' ratio to eager is reported here as in the idle case."""
    case = _listmle(device, *LIST_SHAPES[0])
    case.case = "ListMLE beside a busy process"
    case.impls = [impl for impl in case.impls if impl.name in ("reference", "kdops")]
    case.beside = busy_process
    return case


def _listwise_kd(device: torch.device, batch: int, n: int) -> Case:
    gen = torch.Generator().manual_seed(2)
    inputs = [
        torch.randn(batch, n, generator=gen).to(device).requires_grad_(),
        torch.randn(batch, n, generator=gen).to(device) * 3,
    ]
    impls = _impls(
        lambda s, t: reference.listwise_kd_loss(s, t, TEMPERATURE),
        lambda s, t: kdops.listwise_kd_loss(s, t, TEMPERATURE),
        inputs,
        peers=[("sentence-transformers", _sentence_transformers_distill_kl)],
        floor=(batch, n) == LIST_SHAPES[0],
    )
    return Case("listwise_kd_loss", "listwise KD", f"B={batch} n={n}", torch.float32, "fwd+bwd", impls)


def _listwise_kd_learned_temperature(device: torch.device, batch: int, n: int) -> Case:
    """Listwise KD whose shared temperature is a tensor that requires grad (a learned one, CTKD):
    kdops' tensor_temperature overload against autograd through the reference's formula."""
    gen = torch.Generator().manual_seed(2)
    inputs = [
        torch.randn(batch, n, generator=gen).to(device).requires_grad_(),
        torch.randn(batch, n, generator=gen).to(device) * 3,
        torch.tensor(TEMPERATURE, device=device, requires_grad=True),
    ]
    impls = _impls(reference.listwise_kd_loss, kdops.listwise_kd_loss, inputs)
    return Case("listwise_kd_loss", "listwise KD, learned temperature", f"B={batch} n={n}", torch.float32,
                "fwd+bwd", impls)


def _plackett_luce(device: torch.device, batch: int, n: int) -> Case:
    gen = torch.Generator().manual_seed(3)
    inputs = [
        torch.randn(batch, n, generator=gen).to(device).requires_grad_(),
        torch.rand(batch, n, generator=gen).argsort(dim=1).to(device),
    ]
    impls = _impls(reference.plackett_luce_loss, kdops.plackett_luce_loss, inputs, floor=(batch, n) == LIST_SHAPES[0])
    return Case("plackett_luce_loss", "PL given ranking", f"B={batch} n={n}", torch.float32, "fwd+bwd", impls)


def cases(device: torch.device) -> list[Case]:
    out = [_pld(device, b, c) for b, c in PLD_SHAPES]
    for build in (_listmle, _listwise_kd, _listwise_kd_learned_temperature, _plackett_luce):
        out += [build(device, b, n) for b, n in LIST_SHAPES]
    if device.type == "cpu":  # a busy core delays the host's parallel regions, not a GPU's kernels
        out.append(_listmle_beside_busy_process(device))
    return out
