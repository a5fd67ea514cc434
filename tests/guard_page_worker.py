"""Worker of test_maxsim.py::test_cpu_forward_reads_nothing_past_its_inputs, run in its own
process (a read past an input is a crash there, not of the test run).

Places Q, D and d_mask each so that its last byte is the last before an inaccessible page, then
runs the CPU MaxSim forward on every vector ISA this CPU has, in float32 and float64, in each
layout, with docs whose last token tile is short. The kernel prefetches the doc rows ahead of
the ones it reads, past the end of D at the last doc: a prefetch never faults, a load there
would. Prints "ok" when every call ran and matched the same call on ordinary copies."""

from __future__ import annotations

import ctypes
import mmap
import os

import torch

import kdops  # noqa: F401  (loads torch.ops.kdops)

_PAGE = mmap.PAGESIZE
_PROT_NONE = 0
_libc = ctypes.CDLL(None, use_errno=True)


def before_guard_page(t: torch.Tensor) -> torch.Tensor:
    """A copy of t (contiguous) ending at the last byte before a PROT_NONE page."""
    nbytes = t.numel() * t.element_size()
    pages = -(-nbytes // _PAGE)
    buf = mmap.mmap(-1, (pages + 1) * _PAGE)
    guard = ctypes.addressof(ctypes.c_char.from_buffer(buf)) + pages * _PAGE
    if _libc.mprotect(ctypes.c_void_p(guard), _PAGE, _PROT_NONE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect of the guard page failed")
    out = torch.frombuffer(buf, dtype=t.dtype, count=t.numel(), offset=pages * _PAGE - nbytes).view(t.shape)
    out.copy_(t)
    return out


def calls(dtype: torch.dtype) -> list[tuple]:
    """(Q, D, d_mask, doc_offsets) of each layout; Ld = 7 and a last packed doc of 5 tokens end
    in a short 4-token tile, d = 33 in a row that is not a whole number of cache lines."""
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(2, 9, 33, generator=g, dtype=dtype)
    D = torch.randn(5, 7, 33, generator=g, dtype=dtype)
    d_mask = torch.rand(5, 7, generator=g) > 0.3
    tokens = torch.randn(14, 33, generator=g, dtype=dtype)
    offsets = torch.tensor([0, 6, 6, 9, 14])
    return [
        (Q, D, d_mask, None),
        (Q, D.view(1, 5, 7, 33).expand(2, 5, 7, 33).contiguous(), None, None),
        (Q, tokens, None, offsets),
    ]


def main() -> None:
    isas = []
    for isa in ("avx512", "avx2", "generic"):
        os.environ["KDOPS_CPU_ISA"] = isa
        try:
            torch.ops.kdops.maxsim(torch.ones(1, 1, 1), torch.ones(1, 1, 1), None, None, None, False)
            isas.append(isa)
        except RuntimeError:
            pass
    for isa in isas:
        os.environ["KDOPS_CPU_ISA"] = isa
        for dtype in (torch.float32, torch.float64):
            for Q, D, d_mask, offsets in calls(dtype):
                gQ, gD, g_mask = [None if t is None else before_guard_page(t) for t in (Q, D, d_mask)]
                got = torch.ops.kdops.maxsim(gQ, gD, None, g_mask, offsets, False)
                want = torch.ops.kdops.maxsim(Q, D, None, d_mask, offsets, False)
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (isa, dtype)
    print("ok", " ".join(isas))


if __name__ == "__main__":
    main()
