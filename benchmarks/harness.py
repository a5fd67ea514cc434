"""What every benchmark case shares: a case is one op at one shape and dtype, run by several
implementations (the eager reference, torch.compile of it, kdops, installed peers) over the
same inputs. Each implementation is timed with torch.utils.benchmark (median, p20, p80) and
its peak extra memory during one pass is measured."""

from __future__ import annotations

import contextlib
import ctypes
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Sequence

import torch
from torch.utils import benchmark as tbench

Tensors = Sequence[torch.Tensor]


@dataclass
class Impl:
    """One implementation of a case: `fn` runs one pass (forward, or forward and backward)."""

    name: str  # "reference" | "compile" | "kdops" | a peer's name
    fn: Callable[[], object]


@dataclass
class Case:
    op: str
    case: str
    shape: str
    dtype: torch.dtype
    pass_: str  # "fwd" | "fwd+bwd"
    impls: list[Impl] = field(default_factory=list)
    flops: float | None = None  # useful multiply-adds x 2 of one pass, for GFLOP/s
    # What runs beside the timing: a context manager factory (busy_process: another process
    # competing for a core), entered around every implementation's runs; None: nothing.
    beside: Callable[[], ContextManager] | None = None


@contextlib.contextmanager
def busy_process() -> Iterator[None]:
    """Another process spinning on one core for the duration: a machine shared with other jobs,
    where a parallel region waits for a thread that lost its core for a whole time slice."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # running before the first timed call
        yield
    finally:
        spinner.kill()
        spinner.wait()


def forward_backward(loss_fn: Callable[..., torch.Tensor], inputs: Tensors) -> Callable[[], object]:
    """A pass that computes loss_fn(*inputs) and the gradients of all inputs that require grad
    (torch.autograd.grad, so nothing accumulates across repeats). Non-scalar outputs are summed."""
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def run():
        out = loss_fn(*inputs)
        out = out if out.dim() == 0 else out.sum()
        return torch.autograd.grad(out, leaves)

    return run


FLOOR = "floor: x.sum() backward"


def floor_impl(inputs: Tensors) -> Impl:
    """The floor of a fwd+bwd call at a shape: ``x.sum()`` and its backward on the inputs that
    require grad, through the same torch.autograd.grad. No loss can cost less; the ratio of kdops
    to it is the per-call cost the issue's target reads (within 1.2x). Not a competitor: it
    computes no loss, and ``best_other`` skips it."""
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def total(*_):
        out = leaves[0].sum()
        for t in leaves[1:]:
            out = out + t.sum()
        return out

    return Impl(FLOOR, forward_backward(total, inputs))


def forward_only(fn: Callable[..., torch.Tensor], inputs: Tensors) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn(*inputs)

    return run


def compiled(fn: Callable) -> Callable:
    """torch.compile of a reference, as a user would write it (default mode, dynamic=False).
    Every case recompiles the same function for its shapes: allow that, rather than let dynamo
    fall back to eager after its default limit of 8 and time eager under the name 'compile'."""
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    return torch.compile(fn, dynamic=False)


# --- measurement ------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_passes_interleaved(fns: Sequence[Callable[[], object]], min_run_time: float) -> list[tuple[float, float, float]]:
    """(median, p20, p80) in milliseconds of CPU time for each of fns, timed in turns: a block of
    one, a block of the next, ..., round after round, until each has >= 10 blocks of >= 10 ms
    and min_run_time of CPU time. These machines change speed over seconds (a shared host):
    timed one after the other, two implementations can meet different speeds, and their ratio
    measures the machine; timed in turns, each meets the same ones."""
    reps = []
    for fn in fns:
        fn()  # warm-up (and compilation)
        start = time.process_time()
        fn()
        reps.append(max(1, int(0.01 / max(time.process_time() - start, 1e-6))))
    times: list[list[float]] = [[] for _ in fns]
    spent = [0.0] * len(fns)
    while True:
        todo = [i for i in range(len(fns)) if len(times[i]) < 10 or spent[i] < min_run_time]
        if not todo:
            break
        for i in todo:
            start = time.process_time()
            for _ in range(reps[i]):
                fns[i]()
            block = time.process_time() - start
            times[i].append(block / reps[i])
            spent[i] += block
    out = []
    for t in times:
        ms = torch.tensor(t, dtype=torch.float64) * 1e3
        out.append(tuple(float(ms.quantile(q)) for q in (0.5, 0.2, 0.8)))
    return out


def time_pass(fn: Callable[[], object], min_run_time: float) -> tuple[float, float, float]:
    """(median, p20, p80) in milliseconds of wall time over blocks of repeats (torch.utils.benchmark);
    handles CUDA sync."""
    fn()  # warm-up (and compilation)
    m = tbench.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    times = torch.tensor(m.times, dtype=torch.float64) * 1e3
    return tuple(float(times.quantile(q)) for q in (0.5, 0.2, 0.8))


_libc = ctypes.CDLL("libc.so.6")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _malloc_returns_memory(eager: bool) -> None:
    """While measuring memory, make glibc map every large block fresh and unmap it on free,
    so that peak use shows in the resident-set high-water mark; while timing, let it reuse
    blocks as a long-running training process does (fresh mappings cost a page fault per 4 KiB
    and would distort the times of everything that allocates)."""
    threshold = 64 * 1024 if eager else 32 * 1024 * 1024
    _libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    _libc.mallopt(_M_TRIM_THRESHOLD, threshold)
    if eager:
        _libc.malloc_trim(0)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), re.M).group(1))


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated during one pass beyond what was held before it (its outputs
    included). CUDA: the caching allocator's peak. CPU: growth of the process's resident-set
    high-water mark (page granularity; reset through /proc/self/clear_refs)."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        _sync(device)
        del out
        return torch.cuda.max_memory_allocated(device) - before
    _malloc_returns_memory(True)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _status_kib("VmRSS")
        out = fn()
        del out
        return max(0, _status_kib("VmHWM") - before) * 1024
    finally:
        _malloc_returns_memory(False)


_malloc_returns_memory(False)
