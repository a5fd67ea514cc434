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


# --- MaxSim -----------------------------------------------------------------------------------
# Embeddings are multiples of 1/2 in [-1, 1]: every dot product is exact in every dtype, so ties
# are common and the argmax (hence the gradient) never depends on rounding.


def _half_steps(gen, shape, device, dtype):
    return (torch.randint(-2, 3, shape, generator=gen).double() / 2).to(device=device, dtype=dtype)


def _maxsim_sizes(size):
    return 2 + size % 3, 1 + size % 13, 1 + size % 9, 1 + size % 17, 1 + size % 31  # nq, lq, nd, ld, d


def _maxsim_all_pairs(gen, size, device, dtype):
    nq, lq, nd, ld, dim = _maxsim_sizes(size)
    q_mask = (torch.rand(nq, lq, generator=gen) > 0.2).to(device)
    d_mask = (torch.rand(nd, ld, generator=gen) > 0.3).to(device)
    args = [_half_steps(gen, (nq, lq, dim), device, dtype), _half_steps(gen, (nd, ld, dim), device, dtype)]
    return args, {"q_mask": q_mask, "d_mask": d_mask, "length_normalize": size % 2 == 0}


def _maxsim_per_query(gen, size, device, dtype):
    nq, lq, k, ld, dim = _maxsim_sizes(size)
    d_mask = (torch.rand(nq, k, ld, generator=gen) > 0.3).to(device)
    args = [_half_steps(gen, (nq, lq, dim), device, dtype), _half_steps(gen, (nq, k, ld, dim), device, dtype)]
    return args, {"d_mask": d_mask}


def _maxsim_packed(gen, size, device, dtype):
    nq, lq, nd, ld, dim = _maxsim_sizes(size)
    lengths = torch.randint(0, ld + 1, (nd,), generator=gen)  # empty docs included
    lengths[0] += 1  # but some token: the fuzz test takes the max of every gradient
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(device)
    q_mask = (torch.rand(nq, lq, generator=gen) > 0.2).to(device)
    args = [_half_steps(gen, (nq, lq, dim), device, dtype), _half_steps(gen, (int(lengths.sum()), dim), device, dtype), offsets]
    return args, {"q_mask": q_mask}


OP_CASES += [
    OpCase("maxsim", _maxsim_all_pairs, kdops.maxsim, reference.maxsim),
    OpCase("maxsim_per_query", _maxsim_per_query, kdops.maxsim, reference.maxsim),
    OpCase("maxsim_packed", _maxsim_packed, kdops.maxsim_packed, reference.maxsim_packed),
]


# --- Plackett-Luce family ---------------------------------------------------------------------


def _list_sizes(gen, size):
    b, n = 1 + size % 11, 1 + size % 17
    lengths = torch.randint(0, n + 1, (b,), generator=gen)
    return b, n, lengths


def _ranking(gen, b, n, lengths, device):
    """Row r: a permutation of its valid items first, then the padding columns."""
    rows = [torch.cat([torch.randperm(int(k), generator=gen), torch.arange(int(k), n)]) for k in lengths]
    return torch.stack(rows).to(device)


def _plackett_luce(gen, size, device, dtype):
    b, n, lengths = _list_sizes(gen, size)
    scores, weights = _randn(gen, (b, n), device, dtype, 3.0), _randn(gen, (b, n), device, dtype).abs()
    ranking = _ranking(gen, b, n, lengths, device)
    return [scores, ranking, weights], {"lengths": lengths.to(device), "top_k": 1 + size % 5}


def _listmle(gen, size, device, dtype):
    b, n, lengths = _list_sizes(gen, size)
    relevance = torch.randint(0, 3, (b, n), generator=gen).to(device=device, dtype=dtype)  # ties
    return [_randn(gen, (b, n), device, dtype, 3.0)], {"relevance": relevance, "lengths": lengths.to(device)}


def _pld(gen, size, device, dtype):
    b, c = 1 + size % 11, 2 + size % 29
    target = torch.randint(0, c, (b,), generator=gen).to(device)
    return [_randn(gen, (b, c), device, dtype, 3.0), _randn(gen, (b, c), device, dtype, 3.0), target], {"temperature": 2.0}


def _listwise_kd(gen, size, device, dtype):
    b, n, lengths = _list_sizes(gen, size)
    lengths = lengths.clamp(min=1)
    args = [_randn(gen, (b, n), device, dtype, 3.0), _randn(gen, (b, n), device, dtype, 3.0)]
    return args, {"lengths": lengths.to(device), "student_temperature": 1.5, "teacher_temperature": 0.7}


OP_CASES += [
    OpCase("plackett_luce_loss", _plackett_luce, kdops.plackett_luce_loss, reference.plackett_luce_loss),
    OpCase("listmle", _listmle, kdops.listmle, reference.listmle),
    OpCase("pld_loss", _pld, kdops.pld_loss, reference.pld_loss),
    OpCase("listwise_kd_loss", _listwise_kd, kdops.listwise_kd_loss, reference.listwise_kd_loss),
]
