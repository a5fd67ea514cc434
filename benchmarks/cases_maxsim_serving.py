"""MaxSim for serving (kdops.serving): quantized and residual-compressed docs, forward only, at
the reranking shape of cases_maxsim (one query against 1000 docs) and the per-query candidates
layout. Each row holds the eager reference (decode, then the float einsum), torch.compile of it,
kdops, and kdops.maxsim on the float32 tensors ("kdops float32") for the price of the format.
No peer scores these formats on the CPU. The same rows on CUDA, where the quantized rows'
reference decodes the tokens and scores them in float32 (torch has no int64 matmul on CUDA for
the CPU rows' exact einsum), add the GPU peers that have the feature (Triton kernels, each only
when installed, as cases_maxsim's ``_gpu_peers``); any conversion of kdops' format to the peer's
is done once when the case is built, outside the timed call:

- flash-maxsim 0.3.0, one query against its docs (``Q [Lq, d]``, scores ``[Nd]``; no
  per-query-candidates layout): ``flash_maxsim_int8x8`` (int8 x int8) and
  ``flash_maxsim_int8_symmetric`` (float query, rounded to fp16 in the call, x int8 docs). Its
  symmetric int8 is kdops' ``quantize_int8`` (round(x / (max|x| / 127)) in [-127, 127]), the same
  int8 tensors; its doc scales are float16, so kdops' float32 ``d_scale`` is rounded to float16
  once (2^-11 relative per doc token's scale); the query scales pass as float32. Its affine
  uint8 ``flash_maxsim_int8`` (a zero point per token) is a format kdops has not: no row.
- late-interaction-kernels 0.4.5: ``fp8.maxsim_inference_fp8`` takes e4m3 query and docs with
  float32 per-token scales, kdops' ``quantize_fp8`` format unchanged, but no float query: it gets
  its own row (fp8 query x fp8 docs, kdops on the same tensors). ``plaid.maxsim_residual`` reads
  the same codes, centroids and bucket weights, and a doc-length vector (all full, built once);
  its residual bytes hold the dimensions least significant bits first (dimension 0 in the low
  bits), kdops' (ColBERT's order) most significant first: each byte of kdops' residuals,
  bit-reversed, is the peer's (one table lookup over the tensor, once). Its query is given in
  float16 (rounded once): it computes in the query's precision, float16 for float16 (as kdops'
  CUDA kernel does) and bfloat16 for anything else. It L2-normalises the query in the kernel (a
  no-op on unit queries). Its nbits are 2, 4 or 8 (kdops': 1, 2 or 4; the rows use 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import Case, Impl, compiled, forward_only
from kdops import reference

try:
    import flash_maxsim as _flash_maxsim
except ImportError:
    _flash_maxsim = None

try:
    from late_interaction_kernels import fp8 as _lik_fp8, plaid as _lik_plaid
except ImportError:
    _lik_fp8 = _lik_plaid = None

D = 128
NBITS = 2  # PLAID's default residual width


def _tokens(shape, generator) -> torch.Tensor:
    return F.normalize(torch.randn(shape, generator=generator), dim=-1)


def _flops(nq: int, docs_per_query: int, lq: int, ld: int) -> float:
    return 2.0 * nq * docs_per_query * lq * ld * D


def _bit_reversed_bytes(x: torch.Tensor) -> torch.Tensor:
    """Each uint8 of ``x`` with its 8 bits in reverse order (kdops' residual bytes as
    late-interaction-kernels reads them)."""
    bits = (torch.arange(256, device=x.device)[:, None] >> torch.arange(8, device=x.device)) & 1
    table = (bits * 2 ** torch.arange(7, -1, -1, device=x.device)).sum(1).to(torch.uint8)
    return table[x.long()]


def flash_maxsim_int8(q_scale: torch.Tensor | None, d_scale: torch.Tensor) -> Callable[..., torch.Tensor]:
    """flash-maxsim's int8 MaxSim of one query ``q [1, Lq, d]`` (int8 with ``q_scale``, or float)
    against int8 docs ``d [Nd, Ld, d]`` -> ``[Nd]``; the doc scales rounded to float16 here."""
    d_scale16 = d_scale.half()
    if q_scale is None:
        return lambda q, d: _flash_maxsim.flash_maxsim_int8_symmetric(q[0], d, d_scale16)
    return lambda q, d: _flash_maxsim.flash_maxsim_int8x8(q[0], d, d_scale16, Q_int8=q[0], q_scales=q_scale[0])


def lik_fp8(q_scale: torch.Tensor, d_scale: torch.Tensor) -> Callable[..., torch.Tensor]:
    """late-interaction-kernels' fp8 MaxSim, e4m3 query and docs with kdops' per-token scales."""
    return lambda q, d: _lik_fp8.maxsim_inference_fp8(q, d, scale_Q=q_scale, scale_D=d_scale)


def lik_residual(
    Q: torch.Tensor, codes: torch.Tensor, residuals: torch.Tensor, centroids: torch.Tensor,
    weights: torch.Tensor, nbits: int,
) -> tuple[Callable[..., torch.Tensor], list[torch.Tensor]]:
    """late-interaction-kernels' PLAID MaxSim on kdops' compressed docs: returns the call
    ``(Q, codes, residuals) -> [Nq, Nd]`` and its inputs, the query in float16 and kdops'
    ``residuals`` in the peer's bit order."""
    lengths = torch.full(codes.shape[:1], codes.shape[1], dtype=torch.int64, device=codes.device)

    def call(q: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return _lik_plaid.maxsim_residual(q, c, r, lengths, centroids, weights, nbits)

    return call, [Q.half(), codes, _bit_reversed_bytes(residuals)]


def _quantized(name: str, Q, Dd, query: str, docs: str, flops: float, shape: str) -> Case:
    quantize = {"int8": kdops.quantize_int8, "fp8": kdops.quantize_fp8}
    q, q_scale = (Q, None) if query == "float32" else quantize[query](Q)
    d, d_scale = quantize[docs](Dd)

    def ref(q, d):
        if q.is_cuda:  # decode, then the float32 MaxSim
            return reference.maxsim(reference.dequantize(q, q_scale), reference.dequantize(d, d_scale))
        return reference.maxsim_quantized(q, d, q_scale, d_scale)

    impls = [
        Impl("reference", forward_only(ref, [q, d])),
        Impl("compile", forward_only(compiled(ref), [q, d])),
        Impl("kdops", forward_only(lambda q, d: kdops.maxsim_quantized(q, d, q_scale=q_scale, d_scale=d_scale), [q, d])),
        Impl("kdops float32", forward_only(kdops.maxsim, [Q, Dd])),
    ]
    if Q.is_cuda and _flash_maxsim is not None and docs == "int8" and Q.shape[0] == 1 and Dd.dim() == 3:
        impls.append(Impl("flash-maxsim", forward_only(flash_maxsim_int8(q_scale, d_scale), [q, d])))
    if Q.is_cuda and _lik_fp8 is not None and query == docs == "fp8":
        impls.append(Impl("late-interaction-kernels", forward_only(lik_fp8(q_scale, d_scale), [q, d])))
    return Case("maxsim_quantized", f"{name}: {query} query x {docs} docs", shape, torch.float32, "fwd", impls, flops)


def _residual(name: str, Q, Dd, gen, flops: float, shape: str) -> Case:
    tokens = Dd.reshape(-1, D)
    centroids = tokens[torch.randperm(tokens.shape[0], generator=gen)[:1024].to(tokens.device)].clone()
    cutoffs, weights = kdops.residual_buckets(tokens - centroids[(tokens @ centroids.T).argmax(1)], NBITS)
    codes, residuals = kdops.residual_compress(Dd, centroids, cutoffs)

    def ref(q, c, r):
        return reference.maxsim_residual(q, c, r, centroids, weights)

    impls = [
        Impl("reference", forward_only(ref, [Q, codes, residuals])),
        Impl("compile", forward_only(compiled(ref), [Q, codes, residuals])),
        Impl("kdops", forward_only(lambda q, c, r: kdops.maxsim_residual(q, c, r, centroids, weights), [Q, codes, residuals])),
        Impl("kdops float32", forward_only(kdops.maxsim, [Q, Dd])),
    ]
    if Q.is_cuda and _lik_plaid is not None:
        call, inputs = lik_residual(Q, codes, residuals, centroids, weights, NBITS)
        impls.append(Impl("late-interaction-kernels", forward_only(call, inputs)))
    return Case("maxsim_residual", f"{name}: {NBITS}-bit residuals", shape, torch.float32, "fwd", impls, flops)


def cases(device: torch.device) -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    nd, lq, ld = 1000, 32, 300
    Q, Dd = _tokens((1, lq, D), gen).to(device), _tokens((nd, ld, D), gen).to(device)
    rerank = f"Nq=1 Nd={nd} Lq={lq} Ld={ld} d={D}"
    nq, k, ld_k = 8, 32, 180
    Qk, Dk = _tokens((nq, lq, D), gen).to(device), _tokens((nq, k, ld_k, D), gen).to(device)
    per_query = f"Nq={nq} K={k} Lq={lq} Ld={ld_k} d={D}"
    return [
        _quantized("reranking", Q, Dd, "int8", "int8", _flops(1, nd, lq, ld), rerank),
        _quantized("reranking", Q, Dd, "float32", "int8", _flops(1, nd, lq, ld), rerank),
        _quantized("reranking", Q, Dd, "float32", "fp8", _flops(1, nd, lq, ld), rerank),
        _quantized("reranking", Q, Dd, "fp8", "fp8", _flops(1, nd, lq, ld), rerank),
        _quantized("per-query candidates", Qk, Dk, "int8", "int8", _flops(nq, k, lq, ld_k), per_query),
        _residual("reranking", Q, Dd, gen, _flops(1, nd, lq, ld), rerank),
    ]
