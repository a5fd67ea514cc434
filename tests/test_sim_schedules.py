"""Every CUDA kernel family on the simulator under each seeded schedule (random, warp run-ahead,
warp round-robin, PCT; blocks shuffled), at shapes that cross every tile and path boundary, each
result compared with the float64 reference (not only with another schedule's result):

- MaxSim SIMT (fp64, and fp32 without TF32): Lq = 70 and Ld = 75, 3 query and 3 doc tiles of 32;
  the tensor-core kernel (fp16, bf16, TF32): 2 strips of 64 query rows, 2 doc tiles of 64 (the
  second partial), d = 24 (a partial k-step); fp16/bf16 split there (6 items on 132 SMs), a block
  per strip and the chunk sum after; dD with a skewed argmax: every query token of every
  query picks the same doc token, one long chain of hits for a single doc row, below the hot
  threshold (one warp) and past it (the row's hits split into 3 parts, then combined);
- the list losses on both sides of 32 (one key a lane in the warp kernels, or two) and of 256
  (the last warp-per-row size, the first block-per-row one), 9 rows (two blocks of 8 warps);
- Margin-MSE over 3 blocks of its grid sum (multi-negative, masked) and 2 (pairwise).

A schedule that lets a warp run ahead into shared memory another warp still reads, or that
interleaves warps in lockstep, changes a racy kernel's values: here they must not change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import kdops
from kdops import reference
from kdops.ops import built_with_simulator
from tests.helpers import as_reference, assert_close, leaf, sim_schedule, simulated

if not built_with_simulator():
    pytest.skip("kdops._C_sim not built (build with KDOPS_SIM=1)", allow_module_level=True)

from kdops import _C_sim  # noqa: E402

# (strategy, seed), blocks shuffled by the same seed: two seeds of the schedules that let one warp
# run ahead (the write-after-read races), one of the others.
SCHEDULES = [("random", 1), ("run_ahead", 2), ("run_ahead", 12), ("round_robin", 3), ("pct", 4), ("pct", 14)]


@contextlib.contextmanager
def _tf32(enabled: bool):
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@dataclass
class Case:
    ours: Callable
    ref: Callable
    args: list
    dtype: torch.dtype  # of the values compared (scores of half MaxSim are fp32)
    scale: float  # magnitude of a value; gradients compare at twice it
    tf32: bool = False


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _half_steps(g, shape, dtype):
    """Multiples of 1/2 in [-1, 1]: dot products exact in every dtype, many ties, so the argmax
    (and the gradient) never depends on rounding or summation order."""
    return (torch.randint(-2, 3, shape, generator=g).double() / 2).to(dtype)


def _maxsim(dtype, score_dtype, tf32=False, dim=24):
    g = _gen(1)
    Q, D = _half_steps(g, (2, 70, dim), dtype), _half_steps(g, (3, 75, dim), dtype)
    q_mask, d_mask = torch.rand(2, 70, generator=g) > 0.1, torch.rand(3, 75, generator=g) > 0.2

    def ours(q, d):
        return kdops.maxsim(q, d, q_mask=q_mask, d_mask=d_mask)

    def ref(q, d):
        return reference.maxsim(q, d, q_mask, d_mask)

    return Case(ours, ref, [Q, D], score_dtype, 70 * dim, tf32)


def _maxsim_skewed_argmax(nq=3, lq=40):
    """Positive queries and doc token 5 all ones: it is every query token's unique argmax. With
    3 x 40 = 120 hits one warp adds them (4 in flight); with 15 x 37 = 555, past the hot
    threshold of 256, the row group's entries are split into 3 parts (boundaries inside a query),
    summed apart and added in order by the combine kernel."""
    g = _gen(2)
    Q = _half_steps(g, (nq, lq, 16), torch.float32).abs() + 0.5
    D = _half_steps(g, (2, 75, 16), torch.float32)
    D[:, 5] = 1.0
    return Case(kdops.maxsim, reference.maxsim, [Q, D], torch.float32, lq * 16 * 2)


def _plackett_luce(n, rows):
    g = _gen(n)
    lengths = torch.randint(n // 2, n + 1, (rows,), generator=g)
    lengths[0] = n
    ranking = torch.stack([torch.cat([torch.randperm(int(k), generator=g), torch.arange(int(k), n)]) for k in lengths])
    scores, weights = torch.randn(rows, n, generator=g, dtype=torch.float64) * 3, torch.rand(rows, n, generator=g, dtype=torch.float64)

    def ours(s, w):
        return kdops.plackett_luce_loss(s, ranking, w, lengths=lengths, top_k=n - 3)

    def ref(s, w):
        return reference.plackett_luce_loss(s, ranking, w, lengths=lengths, top_k=n - 3)

    return Case(ours, ref, [scores.float(), weights.float()], torch.float32, n * 4)


def _listmle(n, rows):
    g = _gen(n + 1)
    relevance = torch.randint(0, 4, (rows, n), generator=g).float()
    lengths = torch.randint(1, n + 1, (rows,), generator=g)

    def ours(s):
        return kdops.listmle(s, relevance, lengths=lengths)

    def ref(s):
        return reference.listmle(s, relevance.double(), lengths=lengths)

    return Case(ours, ref, [torch.randn(rows, n, generator=g) * 3], torch.float32, n * 4)


def _pld(classes, rows):
    g = _gen(classes + 2)
    target = torch.randint(0, classes, (rows,), generator=g)
    student, teacher = torch.randn(rows, classes, generator=g) * 3, torch.randn(rows, classes, generator=g) * 3

    def ours(s, t):
        return kdops.pld_loss(s, t, target, temperature=2.0)

    def ref(s, t):
        return reference.pld_loss(s, t, target, temperature=2.0)

    return Case(ours, ref, [student, teacher], torch.float32, classes * 4)


def _listwise_kd(n, rows):
    g = _gen(n + 3)
    lengths = torch.randint(1, n + 1, (rows,), generator=g)
    student, teacher = torch.randn(rows, n, generator=g) * 3, torch.randn(rows, n, generator=g) * 3

    def ours(s, t):
        return kdops.listwise_kd_loss(s, t, lengths=lengths, student_temperature=1.5, teacher_temperature=0.7)

    def ref(s, t):
        return reference.listwise_kd_loss(s, t, lengths=lengths, student_temperature=1.5, teacher_temperature=0.7)

    return Case(ours, ref, [student, teacher], torch.float32, n * 4)


def _margin_mse_multi_block():
    g = _gen(3)
    student, teacher = torch.randn(700, 9, generator=g), torch.randn(700, 9, generator=g)  # 5600 terms
    mask = torch.rand(700, 9, generator=g) > 0.2

    def ours(s, t):
        return kdops.margin_mse(s, t, mask=mask)

    def ref(s, t):
        return reference.margin_mse(s, t, mask=mask)

    return Case(ours, ref, [student, teacher], torch.float32, 16)


def _margin_mse_pairwise():
    g = _gen(4)
    args = [torch.randn(3000, generator=g) for _ in range(4)]  # 3000 terms: 2 blocks
    return Case(lambda *a: kdops.margin_mse(*a, reduction="sum"), lambda *a: reference.margin_mse(*a, reduction="sum"),
                args, torch.float32, 3000 * 16)


CASES = {
    "maxsim_simt_fp64": lambda: _maxsim(torch.float64, torch.float64),
    "maxsim_simt_fp32": lambda: _maxsim(torch.float32, torch.float32),
    "maxsim_tensor_core_fp16": lambda: _maxsim(torch.float16, torch.float32),
    "maxsim_tensor_core_bf16": lambda: _maxsim(torch.bfloat16, torch.float32),
    "maxsim_tensor_core_tf32": lambda: _maxsim(torch.float32, torch.float32, tf32=True),
    "maxsim_doc_grad_skewed_argmax": _maxsim_skewed_argmax,
    "maxsim_doc_grad_skewed_argmax_split": lambda: _maxsim_skewed_argmax(15, 37),
    "plackett_luce_n32": lambda: _plackett_luce(32, 9),
    "plackett_luce_n257": lambda: _plackett_luce(257, 3),
    "listmle_n33": lambda: _listmle(33, 9),
    "listmle_n256": lambda: _listmle(256, 9),
    "pld_c31": lambda: _pld(31, 9),
    "pld_c300": lambda: _pld(300, 3),
    "listwise_kd_n33": lambda: _listwise_kd(33, 9),
    "listwise_kd_n257": lambda: _listwise_kd(257, 3),
    "margin_mse_multi_block": _margin_mse_multi_block,
    "margin_mse_pairwise_two_blocks": _margin_mse_pairwise,
}


@pytest.mark.parametrize("threads,seed", SCHEDULES, ids=[f"{s}-{seed}" for s, seed in SCHEDULES])
@pytest.mark.parametrize("name", list(CASES))
def test_every_schedule_gives_the_reference_at_boundary_shapes(name, threads, seed):
    case = CASES[name]()
    ours = [leaf(a) for a in case.args]
    refs = [as_reference(a) for a in ours]
    with simulated(), _tf32(case.tf32), sim_schedule(threads, seed):
        out = case.ours(*ours)
        upstream = torch.rand(out.shape, generator=_gen(seed), dtype=torch.float64) + 0.5
        (out * upstream.to(out)).sum().backward()
    expected = case.ref(*refs)
    (expected * upstream).sum().backward()
    assert_close(out, expected, case.dtype, scale=case.scale)
    for o, r in zip(ours, refs):
        assert_close(o.grad, r.grad, o.dtype, scale=2 * case.scale)
