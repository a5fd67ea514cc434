"""MaxSim for serving (kdops.serving): quantized and residual-compressed docs, forward only, at
the reranking shape of cases_maxsim (one query against 1000 docs) and the per-query candidates
layout. Each row holds the eager reference (decode, then the float einsum), torch.compile of it,
kdops, and kdops.maxsim on the float32 tensors ("kdops float32") for the price of the format.
No peer is installed here that scores these formats on the CPU (flash-maxsim's int8 and
late-interaction-kernels' fp8 / PLAID paths are CUDA kernels). The same rows on CUDA, where the
quantized rows' reference decodes the tokens and scores them in float32 (torch has no int64
matmul on CUDA for the CPU rows' exact einsum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import Case, Impl, compiled, forward_only
from kdops import reference

D = 128
NBITS = 2  # PLAID's default residual width


def _tokens(shape, generator) -> torch.Tensor:
    return F.normalize(torch.randn(shape, generator=generator), dim=-1)


def _flops(nq: int, docs_per_query: int, lq: int, ld: int) -> float:
    return 2.0 * nq * docs_per_query * lq * ld * D


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
        _quantized("per-query candidates", Qk, Dk, "int8", "int8", _flops(nq, k, lq, ld_k), per_query),
        _residual("reranking", Q, Dd, gen, _flops(1, nd, lq, ld), rerank),
    ]
