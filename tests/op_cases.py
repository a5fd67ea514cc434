"""One random, valid call of every public op, for the tests that hold for all of them
(determinism, thread safety, layouts, fuzzing). Each case builds float64 inputs from a seed,
then runs kdops and kdops.reference on the same values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import kdops
from kdops import reference


@dataclass
class OpCase:
    name: str
    # make(gen, size, device, dtype) -> (args, kwargs); float tensors in args get gradients
    make: Callable[[torch.Generator, int, str, torch.dtype], tuple[list, dict]]
    kdops_fn: Callable
    reference_fn: Callable


def _randn(gen, shape, device, dtype, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _margin_multi(gen, size, device, dtype):
    b, n = size, 1 + size % 7
    mask = (torch.rand(b, n + 1, generator=gen) > 0.2).to(device)
    return [_randn(gen, (b, n + 1), device, dtype), _randn(gen, (b, n + 1), device, dtype)], {"mask": mask}


def _margin_pairwise(gen, size, device, dtype):
    return [_randn(gen, (size,), device, dtype) for _ in range(4)], {}


OP_CASES = [
    OpCase("margin_mse", _margin_multi, kdops.margin_mse, reference.margin_mse),
    OpCase("margin_mse_pairwise", _margin_pairwise, kdops.margin_mse, reference.margin_mse),
]
