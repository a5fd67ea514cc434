"""MaxSim for serving: scoring quantized (int8, float8 e4m3) and residual-compressed
(ColBERT/PLAID) documents, and the helpers that make those formats. Inference only: the ops
have no gradient and refuse inputs that require grad. Both run on the CPU and on CUDA (tensor
cores). The formulas are spelled out in kdops.reference (maxsim_quantized, residual_decompress)."""

from __future__ import annotations

import torch
from torch import Tensor

from kdops import functional as _functional
from kdops import ops as _registrations  # noqa: F401  (registers fake kernels)
from kdops._validate import check_backend, check_tensor

__all__ = [
    "maxsim_quantized",
    "maxsim_residual",
    "quantize_fp8",
    "quantize_int8",
    "residual_buckets",
    "residual_compress",
]

def _check_inputs(op: str, tensors: dict[str, Tensor | None]) -> None:
    for name, value in tensors.items():
        if value is None:
            continue
        check_tensor(value, name)
        check_backend(value, op)


def _check_flag(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


# --- quantization helpers ---------------------------------------------------------------------


def quantize_int8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-token int8: ``scale = max|x| / 127`` over the last dimension,
    ``q = round(x / scale)`` in [-127, 127] (an all-zero token: scale 0, q 0). Returns
    ``(q int8 [..., d], scale float32 [...])``; ``q * scale`` approximates ``x``."""
    check_tensor(x, "x")
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[..., None]
    return torch.round(x / safe).clamp_(-127, 127).to(torch.int8), scale


def quantize_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token float8 e4m3 (``torch.float8_e4m3fn``): ``scale = max|x| / 448`` (e4m3's largest
    finite value) over the last dimension, values ``x / scale`` rounded to e4m3. Returns
    ``(values float8_e4m3fn [..., d], scale float32 [...])``."""
    check_tensor(x, "x")
    x = x.float()
    scale = x.abs().amax(dim=-1) / 448
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[..., None]
    return (x / safe).to(torch.float8_e4m3fn), scale


def residual_buckets(residuals: Tensor, nbits: int) -> tuple[Tensor, Tensor]:
    """ColBERT's residual buckets, from sample residuals (embeddings minus their centroids,
    any shape): the ``2^nbits`` buckets split the residual values into equal-count ranges
    (``cutoffs``: the quantiles i / 2^nbits, i = 1..2^nbits - 1), and each bucket decodes to its
    middle quantile (``weights``: (i + 0.5) / 2^nbits), the same value in every dimension.
    Returns ``(cutoffs [2^nbits - 1], weights [2^nbits])`` float32."""
    check_tensor(residuals, "residuals")
    if nbits not in (1, 2, 4):
        raise ValueError(f"nbits must be 1, 2 or 4, got {nbits!r}")
    options = 2**nbits
    quantiles = torch.arange(options, dtype=torch.float32, device=residuals.device) / options
    values = residuals.float().flatten()
    return values.quantile(quantiles[1:]), values.quantile(quantiles + 0.5 / options)


def residual_compress(x: Tensor, centroids: Tensor, bucket_cutoffs: Tensor) -> tuple[Tensor, Tensor]:
    """Compress token embeddings ``x [..., d]`` as ColBERT's ResidualCodec.compress does: each
    token's code is its nearest centroid by inner product, and each dimension of its residual
    ``x - centroids[code]`` is bucketed by ``bucket_cutoffs`` (:func:`residual_buckets`;
    nbits = log2(len + 1)), the bucket's bits packed as kdops.reference.residual_decompress
    reads them (ColBERT's own order). Returns ``(codes int32 [...], residuals uint8
    [..., d * nbits / 8])``, the tensors :func:`maxsim_residual` scores."""
    check_tensor(x, "x")
    check_tensor(centroids, "centroids")
    check_tensor(bucket_cutoffs, "bucket_cutoffs")
    nbits = {1: 1, 3: 2, 15: 4}.get(bucket_cutoffs.numel())
    if nbits is None:
        raise ValueError(f"bucket_cutoffs must hold 2^nbits - 1 values (1, 3 or 15), got {bucket_cutoffs.numel()}")
    dim = centroids.shape[1]
    if x.shape[-1] != dim or dim * nbits % 8 != 0:
        raise ValueError(f"x must be [..., d] with the centroids' d = {dim} and d * nbits a multiple of 8, got {list(x.shape)}")
    x = x.float()
    codes = (x @ centroids.float().T).argmax(dim=-1)
    buckets = torch.bucketize(x - centroids.float()[codes], bucket_cutoffs.float())
    bits = (buckets[..., None] >> torch.arange(nbits, device=x.device)) & 1  # [..., d, nbits], least significant first
    stream = bits.flatten(-2).unflatten(-1, (-1, 8))  # [..., bytes, 8], the first bit most significant
    weights = 2 ** torch.arange(7, -1, -1, device=x.device)
    packed = (stream * weights).sum(-1).to(torch.uint8)
    return codes.to(torch.int32), packed


# --- scoring ----------------------------------------------------------------------------------


def maxsim_quantized(
    Q: Tensor,
    D: Tensor,
    *,
    d_scale: Tensor,
    q_scale: Tensor | None = None,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    length_normalize: bool = False,
) -> Tensor:
    """MaxSim against quantized docs -> float32 scores ``[Nq, K]``. Inference only.

    ``D``: int8 or ``torch.float8_e4m3fn``, ``[Nd, Ld, d]`` (all pairs) or ``[Nq, K, Ld, d]``
    (each query against its own candidates), with ``d_scale`` float32 ``D.shape[:-1]`` (one
    scale per token, :func:`quantize_int8` / :func:`quantize_fp8`). ``Q [Nq, Lq, d]``: float32,
    or int8 / float8_e4m3fn with ``q_scale [Nq, Lq]``. Masks and ``length_normalize`` as in
    :func:`kdops.maxsim`.

    int8 Q and D: exact integer dot products (int32 accumulation; AVX-512 VNNI where the CPU
    has it, mma.sync m16n8k32 .s8 on CUDA), ``sum_i q_scale[i] * max_j <Q_i, D_j> * d_scale[j]``,
    the same float32 scores on both. Every other pair: on the CPU the tokens are decoded to
    float32 (``x * scale``) a block at a time and scored in float32, the scores equal to
    :func:`kdops.maxsim` of the decoded tensors; on CUDA they are decoded to fp16 (int8 and e4m3
    exactly, a float32 Q rounded to fp16, so within fp16's range) and multiplied on fp16 tensor
    cores with fp32 sums, the scales applied outside the dot products, as for int8: the scores
    agree with the CPU's to float32 rounding (plus a float32 Q's fp16 rounding).
    """
    tensors = {"Q": Q, "D": D, "d_scale": d_scale, "q_scale": q_scale, "q_mask": q_mask, "d_mask": d_mask}
    _check_inputs("kdops.maxsim_quantized", tensors)
    _check_flag(length_normalize, "length_normalize")
    return _functional._ops.maxsim_quantized.default(Q, q_scale, D, d_scale, q_mask, d_mask, length_normalize, False)[0]


def maxsim_residual(
    Q: Tensor,
    codes: Tensor,
    residuals: Tensor,
    centroids: Tensor,
    bucket_weights: Tensor,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    """MaxSim against ColBERT/PLAID residual-compressed docs -> float32 scores. Inference only.

    The docs in the tensors of a ColBERT/PLAID index: ``codes`` (centroid id per token, int32 or
    int64, ``[Nd, Ld]`` all pairs or ``[Nq, K, Ld]`` per-query candidates), ``residuals``
    (uint8 ``codes.shape + [d * nbits / 8]``, nbits 1, 2 or 4), ``centroids`` float32
    ``[C, d]``, ``bucket_weights`` float32 ``[2^nbits]``. Each token is decoded on the fly, as
    ColBERT decompresses it (``normalize(centroids[code] + bucket_weights[b])``,
    kdops.reference.residual_decompress), a block of tokens at a time, never the whole docs: on
    the CPU to float32; on CUDA to fp16 in shared memory, a tile at a time, scored on fp16 tensor
    cores with fp32 sums (Q rounded to fp16 too, so within fp16's range: the scores agree with the
    CPU's to the two roundings, 2^-10 relative per product).
    ``Q [Nq, Lq, d]`` float32; masks and ``length_normalize`` as in :func:`kdops.maxsim`.
    """
    tensors = {"Q": Q, "codes": codes, "residuals": residuals, "centroids": centroids,
               "bucket_weights": bucket_weights, "q_mask": q_mask, "d_mask": d_mask}
    _check_inputs("kdops.maxsim_residual", tensors)
    _check_flag(length_normalize, "length_normalize")
    return _functional._ops.maxsim_residual.default(
        Q, codes, residuals, centroids, bucket_weights, q_mask, d_mask, length_normalize, False)[0]
