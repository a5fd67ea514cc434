"""Margin-MSE cases: B = 64, 1024, 65536 queries with N = 1 (pairwise form) and N = 7
negatives (multi-negative form), forward + backward in float32.

Peer: sentence-transformers' MarginMSELoss computes MSELoss(student_margin, teacher_margin)
on the [B] margins it builds from the scores (written inline so it runs without the package)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import Case, Impl, compiled, floor_impl, forward_backward
from kdops import reference

SHAPES = [(64, 1), (1024, 1), (65536, 1), (64, 7), (1024, 7), (65536, 7)]


def _sentence_transformers_margin_mse(*scores: torch.Tensor) -> torch.Tensor:
    if len(scores) == 4:
        sp, sn, tp, tn = scores
        return F.mse_loss(sp - sn, tp - tn)
    student, teacher = scores
    return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


def cases(device: torch.device) -> list[Case]:
    out = []
    for batch, negatives in SHAPES:
        gen = torch.Generator().manual_seed(0)
        if negatives == 1:
            shape, form = f"B={batch}", "pairwise"
            student = [torch.randn(batch, generator=gen).to(device).requires_grad_() for _ in range(2)]
            teacher = [torch.randn(batch, generator=gen).to(device) for _ in range(2)]
            inputs = [student[0], student[1], teacher[0], teacher[1]]
        else:
            shape, form = f"B={batch} N={negatives}", "multi-negative"
            inputs = [
                torch.randn(batch, negatives + 1, generator=gen).to(device).requires_grad_(),
                torch.randn(batch, negatives + 1, generator=gen).to(device),
            ]
        impls = [
            Impl("reference", forward_backward(reference.margin_mse, inputs)),
            Impl("compile", forward_backward(compiled(reference.margin_mse), inputs)),
            Impl("kdops", forward_backward(kdops.margin_mse, inputs)),
            Impl("sentence-transformers", forward_backward(_sentence_transformers_margin_mse, inputs)),
        ]
        if batch == SHAPES[0][0]:  # the smallest shape: the per-call cost against the floor
            impls.append(floor_impl(inputs))
        out.append(Case("margin_mse", form, shape, torch.float32, "fwd+bwd", impls))
    return out
