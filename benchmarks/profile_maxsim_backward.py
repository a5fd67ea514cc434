"""Where the MaxSim CPU backward's time goes, on the per-query benchmark shape (issue 13).

    python -m benchmarks.profile_maxsim_backward [--repeat N]

Times (process CPU clock, one thread) the forward, the backward's two halves (dQ gather, dD
scatter) and, beside them, a bare ``torch.empty_like(D).zero_()``: the cost of first touching a
fresh output the size of dD. When the dD half costs about what the bare fill costs, the bound is
the output's page faults, not the scatter's arithmetic. Run it once with ``THP_MEM_ALLOC_ENABLE=1``
(c10's CPU allocator then asks for transparent huge pages for allocations of 2 MiB and more) to
see how much of that is the 4 KiB page faults.
"""

import argparse
import time
from typing import Callable

import torch

import kdops  # noqa: F401  (registers torch.ops.kdops)

NQ, K, LQ, LD, DIM = 32, 32, 32, 180, 128  # benchmarks/cases_maxsim.py's per-query case


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """Mean process CPU time of fn in milliseconds, after one warm-up call."""
    fn()
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    Q = torch.nn.functional.normalize(torch.randn(NQ, LQ, DIM, generator=gen), dim=-1)
    D = torch.nn.functional.normalize(torch.randn(NQ, K, LD, DIM, generator=gen), dim=-1)
    ops = torch.ops.kdops
    scores, argmax = ops.maxsim(Q, D, None, None, None, False, True)
    grad = torch.ones_like(scores)

    def backward(grad_q: bool, grad_d: bool) -> Callable[[], object]:
        return lambda: ops.maxsim_backward(grad, argmax, Q, D, None, None, False, grad_q, grad_d)

    rows = [
        ("forward (with argmax)", lambda: ops.maxsim(Q, D, None, None, None, False, True)),
        ("backward dQ + dD", backward(True, True)),
        ("backward dQ only", backward(True, False)),
        ("backward dD only", backward(False, True)),
        (f"empty_like(D).zero_() ({D.numel() * D.element_size() / 1e6:.0f} MB)", lambda: torch.empty_like(D).zero_()),
    ]
    print(f"MaxSim per-query Nq={NQ} K={K} Lq={LQ} Ld={LD} d={DIM} float32, one thread, CPU clock")
    for name, fn in rows:
        print(f"  {name:<34} {cpu_ms(fn, args.repeat):8.2f} ms")


if __name__ == "__main__":
    main()
