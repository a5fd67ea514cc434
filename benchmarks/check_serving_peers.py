"""Checks the GPU peers' serving rows of cases_maxsim_serving without a GPU: each peer's call, built
by the row's own builder (the conversions included), runs on tiny CPU tensors under Triton's
interpreter and its scores are compared with kdops.reference on the same format.

    make peer-check    # or: TRITON_INTERPRET=1 PYTHONPATH=/tmp/peers python -m benchmarks.check_serving_peers

(the peers' wheels from ``make peer-wheels``, ``pip install --no-deps --target /tmp/peers``).
TRITON_INTERPRET must be set before triton is imported, hence a process of its own
(tests/test_serving_peers.py runs it so). Prints one line per check and exits 1 if any fails.

The tolerances are each call's own rounding: flash-maxsim's int8 x int8 products are exact
integers, scaled in float32 (its float16 doc scales are given to the reference too); its float
query is rounded to float16 (so is the reference's), the int8 docs are exact in float16;
late-interaction-kernels' PLAID row gets a float16 query and rounds the decoded tokens to
float16 (2^-11 relative each, at most about 2^-10 of each product |q| |d| <= 1 for unit tokens,
times Lq).
Triton 3.8's interpreter computes a ``tl.dot`` of bfloat16 operands wrongly (a 16 x 16 float32
product cast to bfloat16 comes out ~1e10 off), which is one more reason the PLAID row passes a
float16 query: with a float32 query the peer would compute in bfloat16, and that path cannot be
checked here.
Triton's interpreter has no benchmarker, so the autotuner cannot time the kernels' configs: each
autotuned kernel is run once per config of its list (the config fixed, one at a time), and every
config's scores must agree.
late-interaction-kernels' fp8 call runs its Triton kernel only for CUDA tensors on an sm_90+ GPU
(anything else takes its bfloat16 fallback): here its GPU check is answered yes and the CPU
tensors are passed as a subclass whose ``is_cuda`` is True, so the call reaches the kernel (its
e4m3 products are exact in float32, the scales applied after each tile's dot).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

import kdops
from benchmarks import cases_maxsim_serving as serving
from kdops import reference

NQ, LQ, ND, LD, DIM = 1, 4, 3, 5, 32  # tl.dot needs every block dimension >= 16: d = 32
FP16_TOL = LQ * 2.0**-10


def _each_config(kernel, call: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    """``call()`` once per config of the autotuned ``kernel``, that config the only one."""
    configs = kernel.configs
    try:
        outs = []
        for config in configs:
            kernel.configs = [config]
            outs.append(call())
        return outs
    finally:
        kernel.configs = configs


def _close(name: str, outs: list[torch.Tensor], want: torch.Tensor, atol: float, rtol: float = 0.0) -> bool:
    """Every output in ``outs`` (one per config) within ``atol + rtol |want|`` of ``want``."""
    got = [out.reshape(want.shape) for out in outs]
    err = max((g - want).abs().max().item() for g in got)
    ok = all(torch.allclose(g, want, atol=atol, rtol=rtol) for g in got)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |peer - reference| = {err:.3g} over {len(got)} config(s)"
          f" (atol {atol:.3g}, rtol {rtol:.3g})")
    return ok


def _int8_checks(Q: torch.Tensor, Dd: torch.Tensor) -> list[bool]:
    q, q_scale = kdops.quantize_int8(Q)
    d, d_scale = kdops.quantize_int8(Dd)
    d_scale16 = d_scale.half().float()
    quant = sys.modules[serving._flash_maxsim.flash_maxsim_int8x8.__module__]
    int8x8 = _each_config(quant._maxsim_int8x8_kernel, lambda: serving.flash_maxsim_int8(q_scale, d_scale)(q, d))
    float_q = _each_config(quant._maxsim_int8_sym_kernel, lambda: serving.flash_maxsim_int8(None, d_scale)(Q, d))
    exact = (int8x8[0].reshape(1, -1) - reference.maxsim_quantized(q, d, q_scale, d_scale)).abs().max().item()
    print(f"info flash-maxsim int8 x int8 vs the float32 doc scales: max |peer - reference| = {exact:.3g}")
    return [
        _close("flash-maxsim int8 x int8 vs reference.maxsim_quantized (fp16 doc scales)",
               int8x8, reference.maxsim_quantized(q, d, q_scale, d_scale16), atol=1e-5, rtol=1e-5),
        _close("flash-maxsim float16 query x int8 vs reference.maxsim_quantized (fp16 query, doc scales)",
               float_q, reference.maxsim_quantized(Q.half().float(), d, None, d_scale16), atol=1e-5, rtol=1e-5),
    ]


class _ReportsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA, to reach a peer's kernel past its device dispatch."""

    @property
    def is_cuda(self) -> bool:
        return True


def _fp8_checks(Q: torch.Tensor, Dd: torch.Tensor) -> list[bool]:
    q, q_scale = kdops.quantize_fp8(Q)
    d, d_scale = kdops.quantize_fp8(Dd)
    serving._lik_fp8._hopper_or_newer = lambda: True
    call = serving.lik_fp8(q_scale, d_scale)
    got = _each_config(serving._lik_fp8._maxsim_fp8_fwd_kernel,
                       lambda: call(q.as_subclass(_ReportsCuda), d.as_subclass(_ReportsCuda)).as_subclass(torch.Tensor))
    return [_close("late-interaction-kernels fp8 x fp8 (its Triton kernel) vs reference.maxsim_quantized",
                   got, reference.maxsim_quantized(q, d, q_scale, d_scale), atol=1e-5, rtol=1e-5)]


def _residual_checks(Q: torch.Tensor, Dd: torch.Tensor, gen: torch.Generator) -> list[bool]:
    nbits = serving.NBITS
    tokens = Dd.reshape(-1, DIM)
    centroids = tokens[torch.randperm(tokens.shape[0], generator=gen)[:4]].clone()
    cutoffs, weights = kdops.residual_buckets(tokens - centroids[(tokens @ centroids.T).argmax(1)], nbits)
    codes, residuals = kdops.residual_compress(Dd, centroids, cutoffs)
    want = reference.maxsim_residual(Q, codes, residuals, centroids, weights)
    call, inputs = serving.lik_residual(Q, codes, residuals, centroids, weights, nbits)
    kernel = serving._lik_plaid._maxsim_residual_kernel
    ok = _close("late-interaction-kernels PLAID residual (bytes bit-reversed) vs reference.maxsim_residual",
                _each_config(kernel, lambda: call(*inputs)), want, atol=FP16_TOL)
    # The conversion is needed: kdops' bytes as they are decode other residuals (a printed
    # contrast, not a pass condition, since a tiny random case could happen to agree).
    raw = max((out.reshape(want.shape) - want).abs().max().item() for out in _each_config(kernel, lambda: call(inputs[0], codes, residuals)))
    print(f"info late-interaction-kernels on kdops' residual bytes unconverted: max |peer - reference| = {raw:.3g}")
    return [ok]


def main() -> int:
    if serving._flash_maxsim is None or serving._lik_plaid is None:
        print("the peers (flash_maxsim, late_interaction_kernels) are not importable")
        return 1
    gen = torch.Generator().manual_seed(0)
    Q = F.normalize(torch.randn(NQ, LQ, DIM, generator=gen), dim=-1)
    Dd = F.normalize(torch.randn(ND, LD, DIM, generator=gen), dim=-1)
    results = _int8_checks(Q, Dd) + _fp8_checks(Q, Dd) + _residual_checks(Q, Dd, gen)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
