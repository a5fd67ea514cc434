"""Where a small Margin-MSE call's time goes, against the ``x.sum()`` floor (issue 13).

    python -m benchmarks.profile_per_call [--rounds N]

At the multi-negative benchmark's smallest shape (B=64, N=7, float32, one thread) it times, in
turns round after round (process CPU clock, median of rounds), each layer of a fwd+bwd call and
the same layer of the floor, ``torch.autograd.grad(x.sum(), [x])``:

- the whole fwd+bwd step, as benchmarks.run times it;
- the forward on inputs that need no gradient: the public function, the op through ``torch.ops``
  (what the function adds is its argument checks), and ``x.sum()``;
- the forward with autograd recording (the C++ autograd Function saving its inputs, against
  ``sum``'s native node);
- the backward alone (``retain_graph=True`` on a graph built once): the engine running kdops'
  node and its kernel, against ``SumBackward0``;
- that forward and that backward alternated in one loop, which costs what the step costs.

The forward and backward rows timed alone add up to less than the step; alternated, they cost
the step's time. The difference is not work (callgrind counts 1.34x the floor's instructions in
the step): most likely the longer code path of an out-of-tree op running cold, each half evicting
the other's code and branch history (no hardware counters on the VMs this was written on). The kernels' own share is small at this shape (the ``torch.ops`` row against
``x.sum()``); the rest is torch's machinery for an out-of-tree op (the ``torch.ops`` binding, a
custom autograd node and its saved state), which a native op like ``sum`` does not pay.
"""

import argparse
import time
from typing import Callable

import torch

import kdops

B, N = 64, 7  # benchmarks/cases_margin_mse.py's smallest multi-negative case


def _rounds(fns: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """Median over rounds of each fn's mean process CPU time per call, in microseconds; the fns
    take turns within each round, so a change of the machine's speed meets all of them."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.process_time()
            for _ in range(calls):
                fn()
            times[name].append((time.process_time() - start) / calls * 1e6)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="rounds of turns (each 300 calls a row)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(B, N + 1, generator=gen).requires_grad_()
    teacher = torch.randn(B, N + 1, generator=gen)
    op = torch.ops.kdops.margin_mse.default
    kdops_loss = kdops.margin_mse(student, teacher)
    floor_loss = student.sum()

    plain = student.detach()  # no autograd recording, without a no_grad context's own cost
    rows = {
        "fwd+bwd: kdops.margin_mse": lambda: torch.autograd.grad(kdops.margin_mse(student, teacher), [student]),
        "fwd+bwd: floor x.sum()": lambda: torch.autograd.grad(student.sum(), [student]),
        "fwd, no grad: kdops.margin_mse": lambda: kdops.margin_mse(plain, teacher),
        "fwd, no grad: torch.ops op": lambda: op(plain, teacher, None, "mean"),
        "fwd, no grad: x.sum()": lambda: plain.sum(),
        "fwd, recorded: kdops.margin_mse": lambda: kdops.margin_mse(student, teacher),
        "fwd, recorded: x.sum()": lambda: student.sum(),
        "bwd only: kdops node": lambda: torch.autograd.grad(kdops_loss, [student], retain_graph=True),
        "bwd only: SumBackward0": lambda: torch.autograd.grad(floor_loss, [student], retain_graph=True),
        "fwd, bwd alternated: kdops": lambda: (
            kdops.margin_mse(student, teacher), torch.autograd.grad(kdops_loss, [student], retain_graph=True)),
        "fwd, bwd alternated: floor": lambda: (
            student.sum(), torch.autograd.grad(floor_loss, [student], retain_graph=True)),
    }
    us = _rounds(rows, args.rounds, 300)
    print(f"Margin-MSE B={B} N={N} float32, one thread, process CPU time, median of {args.rounds} rounds")
    width = max(map(len, us))
    for name, value in us.items():
        print(f"{name:<{width}}  {value:7.2f} us")
    print(f"fwd+bwd ratio to the floor: {us['fwd+bwd: kdops.margin_mse'] / us['fwd+bwd: floor x.sum()']:.2f}x")


if __name__ == "__main__":
    main()
