"""MaxSim cases (issue 5): in-batch training (all pairs, fwd+bwd), the distillation layout (each
query against its own K candidates, fwd+bwd), one query reranking 1000 docs (fwd), ColPali-like
long queries and docs (fwd), and packed docs of skewed lengths (fwd+bwd). Embeddings are
L2-normalised per token, as ColBERT's are (and as maxsim-cpu expects).

Peers, each only when installed: sentence-transformers' ``util.similarity.maxsim`` /
``maxsim_pairwise`` (its chunked eager MaxSim), maxsim-cpu (forward only, CPU, float32), and on
CUDA flash-maxsim (``flash_maxsim_batched_train`` / ``flash_maxsim_batched``) and
late-interaction-kernels (``maxsim``), both Triton wheels carried to the GPU machine.
The padded implementations (reference, compile, sentence-transformers) get the packed case's
docs padded to the longest with a doc mask, as a user without a packed kernel would run them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import Case, Impl, compiled, forward_backward, forward_only
from kdops import reference

try:
    from sentence_transformers.util import similarity as _st_similarity
except ImportError:
    _st_similarity = None

try:
    import maxsim_cpu as _maxsim_cpu
except ImportError:
    _maxsim_cpu = None

try:
    import flash_maxsim as _flash_maxsim
except ImportError:
    _flash_maxsim = None

try:
    import late_interaction_kernels as _lik
except ImportError:
    _lik = None

D = 128


def _gpu_peers(device, train: bool, per_query: bool, Q, Dd) -> list[Impl]:
    """flash-maxsim and late-interaction-kernels on the same tensors (CUDA only)."""
    if device.type != "cuda":
        return []
    run = forward_backward if train else forward_only
    impls = []
    if _flash_maxsim is not None:
        fn = _flash_maxsim.flash_maxsim_batched_train if train else _flash_maxsim.flash_maxsim_batched
        impls.append(Impl("flash-maxsim", run(lambda q, d: fn(q, d, shared_docs=not per_query), [Q, Dd])))
    if _lik is not None:
        impls.append(Impl("late-interaction-kernels", run(_lik.maxsim, [Q, Dd])))
    return impls


def _tokens(shape, generator, device, dtype, requires_grad=False) -> torch.Tensor:
    x = F.normalize(torch.randn(shape, generator=generator), dim=-1)
    return x.to(device=device, dtype=dtype).requires_grad_(requires_grad)


def _flops(nq: int, docs_per_query: int, lq: int, doc_tokens: int, dim: int = D) -> float:
    """2 * Nq * Nd * Lq * Ld * d: the multiply-adds of the similarities (a packed doc set counts
    its real tokens only)."""
    return 2.0 * nq * docs_per_query * lq * doc_tokens * dim


def _st_per_query(Q: torch.Tensor, Dc: torch.Tensor) -> torch.Tensor:
    """sentence-transformers on the distillation layout: each (query, candidate) pair."""
    nq, k = Dc.shape[:2]
    return _st_similarity.maxsim_pairwise(Q.repeat_interleave(k, 0), Dc.flatten(0, 1)).view(nq, k)


def _in_batch(device, dtype, gen) -> Case:
    nq, nd, lq, ld = 32, 64, 32, 180
    Q = _tokens((nq, lq, D), gen, device, dtype, True)
    Dd = _tokens((nd, ld, D), gen, device, dtype, True)
    impls = [
        Impl("reference", forward_backward(reference.maxsim, [Q, Dd])),
        Impl("compile", forward_backward(compiled(reference.maxsim), [Q, Dd])),
        Impl("kdops", forward_backward(kdops.maxsim, [Q, Dd])),
    ]
    if _st_similarity is not None:
        impls.append(Impl("sentence-transformers", forward_backward(_st_similarity.maxsim, [Q, Dd])))
    impls += _gpu_peers(device, True, False, Q, Dd)
    return Case("maxsim", "in-batch", f"Nq={nq} Nd={nd} Lq={lq} Ld={ld} d={D}", dtype, "fwd+bwd",
                impls, _flops(nq, nd, lq, ld))


def _distillation(device, dtype, gen) -> Case:
    nq, k, lq, ld = 32, 32, 32, 180
    Q = _tokens((nq, lq, D), gen, device, dtype, True)
    Dc = _tokens((nq, k, ld, D), gen, device, dtype, True)
    impls = [
        Impl("reference", forward_backward(reference.maxsim, [Q, Dc])),
        Impl("compile", forward_backward(compiled(reference.maxsim), [Q, Dc])),
        Impl("kdops", forward_backward(kdops.maxsim, [Q, Dc])),
    ]
    if _st_similarity is not None:
        impls.append(Impl("sentence-transformers", forward_backward(_st_per_query, [Q, Dc])))
    impls += _gpu_peers(device, True, True, Q, Dc)
    return Case("maxsim", "distillation (per-query K)", f"Nq={nq} K={k} Lq={lq} Ld={ld} d={D}", dtype,
                "fwd+bwd", impls, _flops(nq, k, lq, ld))


def _forward_case(name, device, dtype, gen, nd, lq, ld) -> Case:
    """One query against nd docs, forward only (reranking)."""
    Q = _tokens((1, lq, D), gen, device, dtype)
    Dd = _tokens((nd, ld, D), gen, device, dtype)
    impls = [
        Impl("reference", forward_only(reference.maxsim, [Q, Dd])),
        Impl("compile", forward_only(compiled(reference.maxsim), [Q, Dd])),
        Impl("kdops", forward_only(kdops.maxsim, [Q, Dd])),
    ]
    if _st_similarity is not None:
        impls.append(Impl("sentence-transformers", forward_only(_st_similarity.maxsim, [Q, Dd])))
    if _maxsim_cpu is not None and device.type == "cpu" and dtype == torch.float32:
        q_np, d_np = Q[0].numpy(), Dd.numpy()
        impls.append(Impl("maxsim-cpu", forward_only(_maxsim_cpu.maxsim_scores, [q_np, d_np])))
    impls += _gpu_peers(device, False, False, Q, Dd)
    return Case("maxsim", name, f"Nq=1 Nd={nd} Lq={lq} Ld={ld} d={D}", dtype, "fwd", impls,
                _flops(1, nd, lq, ld))


def _packed(device, dtype, gen) -> Case:
    nq, lq, nd = 32, 32, 64
    # Skewed lengths: most docs short, a few long (log-normal, 16..512 tokens).
    lengths = torch.exp(torch.randn(nd, generator=gen) * 0.8 + 4.5).clamp(16, 512).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).to(device)
    Q = _tokens((nq, lq, D), gen, device, dtype, True)
    tokens = _tokens((int(lengths.sum()), D), gen, device, dtype, True)
    padded, d_mask = reference.pad_packed(tokens.detach(), offsets)
    padded.requires_grad_()

    def masked(fn):
        return lambda q, d: fn(q, d, None, d_mask)

    impls = [
        Impl("reference", forward_backward(masked(reference.maxsim), [Q, padded])),
        Impl("compile", forward_backward(compiled(masked(reference.maxsim)), [Q, padded])),
        Impl("kdops", forward_backward(lambda q, t: kdops.maxsim_packed(q, t, offsets), [Q, tokens])),
    ]
    if _st_similarity is not None:
        st = lambda q, d: _st_similarity.maxsim(q, d, None, d_mask)  # noqa: E731
        impls.append(Impl("sentence-transformers", forward_backward(st, [Q, padded])))
    shape = f"Nq={nq} Nd={nd} Lq={lq} Ld={int(lengths.min())}..{int(lengths.max())} (T={int(lengths.sum())}) d={D}"
    return Case("maxsim", "packed skewed lengths", shape, dtype, "fwd+bwd", impls,
                _flops(nq, 1, lq, int(lengths.sum())))


def cases(device: torch.device) -> list[Case]:
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    out = []
    for dtype in dtypes:
        gen = torch.Generator().manual_seed(0)
        out.append(_in_batch(device, dtype, gen))
        out.append(_distillation(device, dtype, gen))
        out.append(_forward_case("reranking", device, dtype, gen, nd=1000, lq=32, ld=300))
        if device.type == "cuda":
            out.append(_forward_case("ColPali-like", device, dtype, gen, nd=100, lq=1024, ld=1024))
        else:  # 100 docs of 1024 x 1024 take seconds per pass on a small CPU
            out.append(_forward_case("ColPali-like (10 docs on CPU)", device, dtype, gen, nd=10, lq=1024, ld=1024))
        out.append(_packed(device, dtype, gen))
    return out
