"""The peers' Triton MaxSim forward kernels compiled to SASS without a GPU, at the configurations
their autotuners would choose from.

flash-maxsim 0.3.0 (`flash_maxsim.flash_maxsim._maxsim_fwd_kernel`) and late-interaction-kernels
0.4.5 (`late_interaction_kernels.forward._maxsim_fwd_kernel`) are imported from a directory the
caller names (their wheels unpacked, or a `pip install --target`): nothing of theirs is in this
repository. Both build their autotune candidate lists from torch.cuda at import or prune time, so
the device is emulated (capability 8.0 for A100, 9.0 for H100) while the lists and their pruning
functions run: the candidates are exactly the peers' own, pruned by the peers' own rules.
Which candidate the autotuner keeps is measured on the GPU at run time; the model stands in for
that measurement and keeps the candidate it predicts fastest (model.py).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

PEER_VERSIONS = {"flash-maxsim": "0.3.0", "late-interaction-kernels": "0.4.5"}
# Triton's family names for the two archs modelled (sm_80 = A100, sm_90 = H100).
CAPABILITY = {80: (8, 0), 90: (9, 0)}


@dataclass(frozen=True)
class Config:
    block_q: int
    block_d: int
    num_warps: int
    num_stages: int

    @property
    def key(self) -> str:
        return f"q{self.block_q}_d{self.block_d}_w{self.num_warps}_s{self.num_stages}"


@contextmanager
def _device(arch: int):
    """torch.cuda answers as a GPU of this arch would (only while the peers' lists are built)."""
    import torch

    with mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.object(torch.cuda, "get_device_capability", return_value=CAPABILITY[arch]):
        yield


def import_peers(site: str):
    """The two peers' forward modules from `site`, refusing other releases than the ones modelled
    (their kernels and autotune lists change between releases)."""
    if site not in sys.path:
        sys.path.insert(0, site)
        importlib.invalidate_caches()
    from importlib.metadata import distributions

    found = {d.metadata["Name"]: d.version for d in distributions(path=[site])}
    for name, version in PEER_VERSIONS.items():
        if found.get(name) != version:
            raise RuntimeError(f"{site} has {name} {found.get(name)}, the model is for {version}: "
                               f"pip install --no-deps --target DIR {name}=={version}")
    fm = importlib.import_module("flash_maxsim.flash_maxsim")
    lik = importlib.import_module("late_interaction_kernels.forward")
    return fm, lik


def _configs(cfgs) -> list[Config]:
    return [Config(c.kwargs["BLOCK_Q"], c.kwargs["BLOCK_D"], c.num_warps, c.num_stages) for c in cfgs]


def candidates(site: str, peer: str, arch: int, lq: int, d: int = 128) -> list[Config]:
    """The autotune candidates the peer keeps for (arch, Lq, d) after its own pruning."""
    fm, lik = import_peers(site)
    with _device(arch):
        if peer == "flash-maxsim":
            cfgs = fm._get_configs()
            return _configs(fm._prune_configs(cfgs, {"Lq": lq, "d": d}))
        autotune = importlib.import_module("late_interaction_kernels._autotune")
        importlib.import_module("late_interaction_kernels._utils").detect_gpu.cache_clear()  # lru_cache'd
        cfgs = autotune.forward_configs()
        kept = _configs(autotune.prune_forward(cfgs, {"Lq": lq, "d_pad": d}))
        importlib.import_module("late_interaction_kernels._utils").detect_gpu.cache_clear()
        return kept


def _signature(fn, constexprs: dict, pointer_types: dict) -> dict:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = pointer_types.get(name, "*fp16")
        else:
            sig[name] = "i32"  # strides and sizes: what Triton specialises ints < 2**31 to
    return sig


def kernel_and_constexprs(site: str, peer: str, lq: int, cfg: Config, d: int = 128, dtype: str = "fp16",
                          q_lengths: bool = False):
    """The kernel and its compile-time arguments as the benchmark's call site passes them: forward
    only, no argmax, no masks (flash-maxsim: fp16 inputs, shared docs, `q_lengths` for the
    128-token chunks of a longer query; late-interaction-kernels: bf16, cross-product layout, its
    docs/benchmarks.md setup)."""
    fm, lik = import_peers(site)
    if peer == "flash-maxsim":
        fn = fm._maxsim_fwd_kernel.fn
        c = dict(Lq=lq, d=d, d_pad=d, shared_docs=1, save_argmax=0, use_q_lengths=int(q_lengths),
                 input_dtype=int(dtype == "bf16"), BLOCK_Q=cfg.block_q, BLOCK_D=cfg.block_d)
        ptrs = {"Q_ptr": f"*{dtype}", "D_ptr": f"*{dtype}", "lengths_ptr": "*i32", "q_lengths_ptr": "*i32",
                "scores_ptr": "*fp32", "argmax_ptr": "*i32"}
        return fn, c, ptrs
    import triton.language as tl

    fn = lik._maxsim_fwd_kernel.fn
    c = dict(Lq=lq, d=d, d_pad=d, has_q_mask=0, has_d_mask=0, save_argmax=0, normalize=0, kd_layout=0,
             BLOCK_Q=cfg.block_q, BLOCK_D=cfg.block_d, COMPUTE_DTYPE=tl.bfloat16)
    ptrs = {"Q_ptr": "*bf16", "D_ptr": "*bf16", "q_mask_ptr": "*i8", "d_mask_ptr": "*i8", "scores_ptr": "*fp32",
            "argmax_ptr": "*i32"}
    return fn, c, ptrs


def compile_sass(site: str, peer: str, arch: int, lq: int, cfg: Config, dtype: str, q_lengths: bool = False) -> dict:
    """{'sass': text, 'registers': n, 'shared': bytes} of one kernel instance (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .tools import cuobjdump_sass, registers

    fn, constexprs, ptrs = kernel_and_constexprs(site, peer, lq, cfg, dtype=dtype, q_lengths=q_lengths)
    src = ASTSource(fn=fn, signature=_signature(fn, constexprs, ptrs), constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        sass, regs = cuobjdump_sass(path), registers(path)
    return {"sass": sass, "registers": regs, "shared": compiled.metadata.shared}
