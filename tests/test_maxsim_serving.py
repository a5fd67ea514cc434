"""MaxSim for serving (kdops.serving): quantized (int8, float8 e4m3) and ColBERT/PLAID
residual-compressed docs, on every backend (the CPU kernel's ISA paths, the CUDA kernels on the
simulator and on a GPU). Against kdops.reference on both padded layouts with
masks; int8 x int8 exact (integer dot products, checked against decode-then-score where float64
is exact too, the VNNI path against the generic one and the CUDA kernel against the CPU kernel
bit for bit); every decoded path equal to kdops.maxsim on the decoded tensors bit for bit;
first-index ties; residual codes built by ColBERT's algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kdops
from kdops import reference
from kdops.ops import built_with_cuda, built_with_simulator
from tests.conftest import cpu_has
from tests.helpers import DEVICES, on_backend, ops, raises_value_check

ISAS = [isa for isa in ("avx512", "generic") if cpu_has(isa)]
LAYOUTS = ["all_pairs", "per_query"]
_NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
# Every backend: the CPU kernel's ISA paths, the CUDA kernels on the simulator and on a GPU.
BACKENDS = [f"cpu-{isa}" for isa in ISAS] + (["sim"] if built_with_simulator() else []) + [pytest.param("cuda", marks=_NO_GPU)]
CUDA_KERNEL_BACKENDS = (["sim"] if built_with_simulator() else []) + [pytest.param("cuda", marks=_NO_GPU)]


@pytest.fixture(params=BACKENDS)
def device(request, monkeypatch):
    """The backend (`cpu-<isa>`: the CPU kernel's ISA path; `sim`: kdops' API routed to the
    simulated CUDA kernels) as the torch device of the test's tensors."""
    backend = request.param
    if backend.startswith("cpu-"):
        monkeypatch.setenv("KDOPS_CPU_ISA", backend.removeprefix("cpu-"))
        backend = "cpu"
    with on_backend(backend) as torch_device:
        yield torch_device


def _int8(gen, shape, low=-127, high=128):
    return torch.randint(low, high, shape, generator=gen, dtype=torch.int8)


def _scale(gen, shape):
    return torch.rand(shape, generator=gen) * 0.02 + 0.001


def _docs_shape(layout, nq, k, ld, dim):
    return (k, ld, dim) if layout == "all_pairs" else (nq, k, ld, dim)


def _masks(gen, nq, lq, tokens):
    q_mask = torch.rand(nq, lq, generator=gen) > 0.2
    d_mask = torch.rand(tokens, generator=gen) > 0.3
    d_mask[0, ...] = False  # a doc (or a query's candidates) with no valid token
    return q_mask, d_mask


def _raw(Q, D, q_scale, d_scale, q_mask=None, d_mask=None, length_normalize=False):
    """The op with its argmax (the backend's: torch.ops.kdops, or kdops_sim inside simulated())."""
    return ops().maxsim_quantized.default(Q, q_scale, D, d_scale, q_mask, d_mask, length_normalize, True)


def _to(device, *tensors):
    return [None if t is None else t.to(device) for t in tensors]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("length_normalize", [False, True])
def test_int8_matches_reference(device, layout, masked, length_normalize):
    gen = torch.Generator().manual_seed(1)
    nq, lq, k, ld, dim = 3, 37, 5, 41, 30  # 2 query panels of 32 rows per item; d not a multiple of 4
    Q, D = _int8(gen, (nq, lq, dim)), _int8(gen, _docs_shape(layout, nq, k, ld, dim))
    q_scale, d_scale = _scale(gen, (nq, lq)), _scale(gen, D.shape[:-1])
    q_mask, d_mask = _masks(gen, nq, lq, D.shape[:-1]) if masked else (None, None)
    kw = dict(q_scale=q_scale, d_scale=d_scale, q_mask=q_mask, d_mask=d_mask, length_normalize=length_normalize)
    on_device = dict(zip(kw, _to(device, q_scale, d_scale, q_mask, d_mask)), length_normalize=length_normalize)
    got = kdops.maxsim_quantized(*_to(device, Q, D), **on_device).cpu()
    expected = reference.maxsim_quantized(Q, D, **kw)
    assert got.dtype == torch.float32 and got.shape == (nq, k)
    # Same per-token maxima (float32 of exact integers, times the scales); only the order of the
    # float32 sum over the Lq query tokens differs.
    torch.testing.assert_close(got, expected, rtol=lq * 2**-23, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_int8_equals_decode_then_score_exactly(device, layout):
    """With power-of-two scales every decoded value, product and sum here is exact in float64,
    and so is the int8 kernel's float32 result (|score| < 2^24 steps of its smallest unit): the
    scores are equal, not close."""
    gen = torch.Generator().manual_seed(2)
    nq, lq, k, ld, dim = 2, 8, 4, 13, 16
    Q, D = _int8(gen, (nq, lq, dim)), _int8(gen, _docs_shape(layout, nq, k, ld, dim))
    q_scale = 2.0 ** -torch.randint(4, 9, (nq, lq), generator=gen).float()
    d_scale = 2.0 ** -torch.randint(4, 9, D.shape[:-1], generator=gen).float()
    q_mask, d_mask = _masks(gen, nq, lq, D.shape[:-1])
    Qx, Dx, qs, ds, qm, dm = _to(device, Q, D, q_scale, d_scale, q_mask, d_mask)
    got = kdops.maxsim_quantized(Qx, Dx, q_scale=qs, d_scale=ds, q_mask=qm, d_mask=dm).cpu()
    decoded = reference.maxsim(reference.dequantize(Q, q_scale).double(), reference.dequantize(D, d_scale).double(),
                               q_mask, d_mask)
    assert torch.equal(got, decoded.float())


# (nq, lq, k, ld, d, per_query): groups of several queries per block (lq <= 32), a query in
# row chunks (lq > 64), docs over several 64-token tiles, d by bytes (odd, not 16-aligned) and by
# 16-byte cp.async copies, d past one mma step (32), per-query candidates, and docs of more tiles
# than the pipeline has buffers (5 > kStages = 3: each buffer reused).
CUDA_SHAPES = [(5, 9, 3, 70, 33, False), (2, 70, 2, 130, 48, False), (3, 17, 4, 21, 7, True), (1, 64, 2, 64, 96, True),
               (3, 20, 2, 300, 64, False)]


@pytest.mark.parametrize("device", CUDA_KERNEL_BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=str)
def test_cuda_int8_equals_cpu_bit_for_bit(device, shape):
    """The tensor-core kernel computes the CPU kernel's values (the exact dot product in
    float32, times the doc token's scale, the max times the query token's scale) and adds a
    query's tokens in the same order: the same scores and argmax, bit for bit."""
    nq, lq, k, ld, dim, per_query = shape
    gen = torch.Generator().manual_seed(sum(shape))
    Q, D = _int8(gen, (nq, lq, dim)), _int8(gen, _docs_shape("per_query" if per_query else "all_pairs", nq, k, ld, dim))
    q_scale, d_scale = _scale(gen, (nq, lq)), _scale(gen, D.shape[:-1])
    q_mask, d_mask = _masks(gen, nq, lq, D.shape[:-1])
    got = [t.cpu() for t in _raw(*_to(device, Q, D, q_scale, d_scale, q_mask, d_mask), length_normalize=True)]
    expected = torch.ops.kdops.maxsim_quantized.default(Q, q_scale, D, d_scale, q_mask, d_mask, True, True)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    scores_only = ops().maxsim_quantized.default(*_to(device, Q, q_scale, D, d_scale, q_mask, d_mask), True, False)
    assert torch.equal(scores_only[0].cpu(), expected[0]) and scores_only[1].numel() == 0


@pytest.mark.skipif(not built_with_simulator(), reason="kdops._C_sim not built")
def test_cuda_int8_feature_chunks_on_a_small_device():
    """With 48 KiB of shared memory a tile holds 352 int8 features: d = 400 runs in two feature
    chunks, the int32 sums carried across them, and gives the CPU kernel's bits."""
    from kdops import _C_sim
    from tests.helpers import simulated

    gen = torch.Generator().manual_seed(14)
    Q, D = _int8(gen, (2, 20, 400)), _int8(gen, (3, 70, 400))
    q_scale, d_scale = _scale(gen, (2, 20)), _scale(gen, (3, 70))
    expected = _raw(Q, D, q_scale, d_scale)
    _C_sim.set_device("small")
    try:
        with simulated():
            got = _raw(Q, D, q_scale, d_scale)
    finally:
        _C_sim.set_device("h100")
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_vnni_equals_generic_bit_for_bit(monkeypatch):
    if "avx512" not in ISAS:
        pytest.skip("no AVX-512 on this CPU")
    gen = torch.Generator().manual_seed(3)
    for ld, dim in enumerate((1, 3, 4, 7, 33, 128), start=6):  # doc lengths 6..11: every tile remainder
        Q, D = _int8(gen, (2, 35, dim)), _int8(gen, (2, 6, ld, dim))
        q_scale, d_scale = _scale(gen, (2, 35)), _scale(gen, D.shape[:-1])
        q_mask, d_mask = _masks(gen, 2, 35, D.shape[:-1])
        out = {}
        for isa in ("avx512", "generic"):
            monkeypatch.setenv("KDOPS_CPU_ISA", isa)
            out[isa] = _raw(Q, D, q_scale, d_scale, q_mask, d_mask)
        assert torch.equal(out["avx512"][0], out["generic"][0]), dim
        assert torch.equal(out["avx512"][1], out["generic"][1]), dim


def test_int8_extremes_stay_exact(device):
    """-128 and 127 everywhere, d = 1024: the largest dot products whose float32 conversion is
    exact (-128 * -128 * 1024 = 2^24), and the +128 offset's largest partial sums."""
    dim = 1024
    Q = torch.full((1, 2, dim), -128, dtype=torch.int8)
    Q[0, 1] = 127
    D = torch.full((3, 1, dim), -128, dtype=torch.int8)
    D[1] = 127
    ones_q, ones_d = torch.ones(1, 2), torch.ones(3, 1)
    got = kdops.maxsim_quantized(*_to(device, Q, D), q_scale=ones_q.to(device), d_scale=ones_d.to(device)).cpu()
    expected = torch.einsum("qid,njd->qnij", Q.long(), D.long()).amax(-1).sum(-1).float()
    assert torch.equal(got, expected)


def _decoded_pair_case(pair: str, layout: str):
    """(Q, D, q_scale, d_scale, q_mask, d_mask) of a pairing "query-docs" (f32, int8 or fp8) in
    `layout`, the same tensors for every backend's test of the decoded pairs."""
    gen = torch.Generator().manual_seed(4)
    nq, lq, k, ld, dim = 2, 19, 3, 23, 24
    x = torch.randn(nq, lq, dim, generator=gen)
    y = torch.randn(_docs_shape(layout, nq, k, ld, dim), generator=gen)
    kinds = {"f32": lambda t: (t, None), "int8": kdops.quantize_int8, "fp8": kdops.quantize_fp8}
    q_kind, d_kind = pair.split("-")
    Q, q_scale = kinds[q_kind](x)
    D, d_scale = kinds[d_kind](y)
    q_mask, d_mask = _masks(gen, nq, lq, D.shape[:-1])
    return Q, D, q_scale, d_scale, q_mask, d_mask


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pair", ["f32-int8", "f32-fp8", "fp8-fp8", "int8-fp8", "fp8-int8"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_decoded_pairs_equal_maxsim_of_decoded_tensors(isa, pair, layout, monkeypatch):
    """Every pair but int8 x int8 decodes tokens to float32 (x * scale) and runs kdops.maxsim's
    kernel: the same scores and argmax, bit for bit, as kdops.maxsim on the decoded tensors."""
    monkeypatch.setenv("KDOPS_CPU_ISA", isa)
    Q, D, q_scale, d_scale, q_mask, d_mask = _decoded_pair_case(pair, layout)
    scores, argmax = _raw(Q, D, q_scale, d_scale, q_mask, d_mask, length_normalize=True)
    Qf = Q if q_scale is None else reference.dequantize(Q, q_scale)
    Df = reference.dequantize(D, d_scale)
    expected, expected_argmax = torch.ops.kdops.maxsim.default(Qf, Df, q_mask, d_mask, None, True, True)
    assert torch.equal(scores, expected) and torch.equal(argmax, expected_argmax)
    torch.testing.assert_close(scores, reference.maxsim_quantized(Q, D, q_scale, d_scale, q_mask, d_mask,
                                                                  length_normalize=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
@pytest.mark.parametrize("dim", [16, 24])
def test_every_code_decodes_to_the_bits_of_torchs_conversion(isa, dtype, dim, monkeypatch):
    """All 256 int8 / e4m3 codes (e4m3 subnormals, zeros of both signs and its two NaNs among
    them) decode as torch's x.float() * scale, bit for bit: query q is the one-hot token e_q, so
    score[q, k] is element q of doc k's only token (a doc holding a NaN scores NaN throughout:
    0 * NaN), and every score has the bits of kdops.maxsim on the decoded tensors. Each code is
    there 3 times; at dim 24 (a vector of 16 and a tail of 8 on AVX-512) once in the tail."""
    monkeypatch.setenv("KDOPS_CPU_ISA", isa)
    gen = torch.Generator().manual_seed(11)
    codes = (torch.arange(768, dtype=torch.int32) % 256).to(torch.uint8)
    D = codes.view(torch.int8 if dtype == torch.int8 else torch.uint8).view(dtype).reshape(-1, 1, dim)
    d_scale = _scale(gen, (D.shape[0], 1))
    Q = torch.eye(dim).reshape(dim, 1, dim)
    scores, _ = _raw(Q, D, None, d_scale)
    decoded = reference.dequantize(D, d_scale)
    assert decoded.isnan().sum() == (6 if dtype == torch.float8_e4m3fn else 0)
    finite = ~decoded.isnan().any(-1)[:, 0]
    assert torch.equal(scores[:, finite], decoded[finite, 0, :].T)
    expected, _ = torch.ops.kdops.maxsim.default(Q, decoded, None, None, None, False, True)
    assert torch.equal(scores.view(torch.int32), expected.view(torch.int32))


@pytest.mark.parametrize("device", CUDA_KERNEL_BACKENDS, indirect=True)
@pytest.mark.parametrize("pair", ["f32-int8", "f32-fp8", "fp8-fp8", "int8-fp8", "fp8-int8"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_decoded_pairs_match_decode_then_score(device, pair, layout):
    """On CUDA every pairing but int8 x int8 is decoded to fp16 and multiplied on fp16 tensor
    cores with fp32 sums, the scales applied outside the dot products. int8 and e4m3 values are
    exact in fp16 and their products exact in fp32, so the scores equal decode-then-score up to
    the order of float32 roundings: the tolerance the CPU's decoded path is held to against the
    reference (1e-5). A float32 Q is rounded to fp16 first, so it is compared (1) with the
    reference of that rounded Q, to the same tolerance, and (2) with the CPU's scores of the
    unrounded Q, within the rounding's bound: 2^-11 * sum_i max_j sum_e |Q_ie * D_je| (plus 1e-5)."""
    Q, D, q_scale, d_scale, q_mask, d_mask = _decoded_pair_case(pair, layout)
    scores, argmax = (t.cpu() for t in _raw(*_to(device, Q, D, q_scale, d_scale, q_mask, d_mask), length_normalize=True))
    taken = Q if q_scale is not None else Q.half().float()  # Q as the tensor cores take it
    expected = reference.maxsim_quantized(taken, D, q_scale, d_scale, q_mask, d_mask, length_normalize=True)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    cpu_scores, cpu_argmax = torch.ops.kdops.maxsim_quantized.default(Q, q_scale, D, d_scale, q_mask, d_mask, True, True)
    if q_scale is not None:
        assert torch.equal(argmax, cpu_argmax)  # the same similarities up to float32 rounding: no near ties here
        return
    equation = "qid,njd->qnij" if D.dim() == 3 else "qid,qnjd->qnij"
    magnitudes = torch.einsum(equation, Q.abs(), reference.dequantize(D, d_scale).abs())  # [Nq, K, Lq, Ld]
    lengths = q_mask.sum(1).clamp(min=1)[:, None]
    bound = 2.0**-11 * (magnitudes.amax(-1) * q_mask[:, None, :]).sum(-1) / lengths + 1e-5
    assert ((scores - cpu_scores).abs() <= bound).all(), ((scores - cpu_scores).abs() / bound).max()


def test_ties_take_the_first_maximal_token(device):
    """Repeated doc tokens tie exactly; the argmax is the first of them, as in kdops.maxsim."""
    gen = torch.Generator().manual_seed(5)
    base = _int8(gen, (4, 6, 12), -3, 4)
    D = base[:, torch.tensor([0, 1, 0, 2, 1, 3, 5, 5, 4, 0, 2, 1])]  # [4, 12, 12]: repeats
    Q = _int8(gen, (2, 40, 12), -3, 4)
    q_scale, d_scale = torch.ones(2, 40), torch.full((4, 12), 0.5)
    scores, argmax = _raw(*_to(device, Q, D, q_scale, d_scale))
    sim = torch.einsum("qid,njd->qnij", Q.long(), D.long())
    positions = torch.arange(12).expand_as(sim)
    first = torch.where(sim == sim.amax(-1, keepdim=True), positions, 99).amin(-1).int()
    assert torch.equal(argmax.cpu(), first)
    for fp8_side in ("Q", "D"):  # the decoded path keeps the same rule (small integers: exact sums)
        Qx, Dx = (Q.float().to(torch.float8_e4m3fn), D) if fp8_side == "Q" else (Q, D.float().to(torch.float8_e4m3fn))
        assert torch.equal(_raw(*_to(device, Qx, Dx, q_scale, d_scale))[1].cpu(), first)


def test_empty_docs_masked_tokens_and_empty_shapes(device):
    gen = torch.Generator().manual_seed(6)
    Q, D = _int8(gen, (2, 3, 8)), _int8(gen, (2, 4, 5, 8))
    q_scale, d_scale = _scale(gen, (2, 3)), _scale(gen, (2, 4, 5))
    d_mask = torch.ones(2, 4, 5, dtype=torch.bool)
    d_mask[1, 2] = False
    q_mask = torch.tensor([[True, False, True], [False, False, False]])
    scores, argmax = (t.cpu() for t in _raw(*_to(device, Q, D, q_scale, d_scale, q_mask, d_mask)))
    assert scores[1].eq(0).all() and argmax[1].eq(-1).all()  # no valid query token
    assert argmax[0, :, 1].eq(-1).all()
    torch.testing.assert_close(scores, reference.maxsim_quantized(Q, D, q_scale, d_scale, q_mask, d_mask))
    Q, q_scale = Q.to(device), q_scale.to(device)
    for shape in ((0, 5, 8), (2, 0, 8)):  # no docs, docs without tokens
        D0 = torch.zeros(shape, dtype=torch.int8, device=device)
        got = kdops.maxsim_quantized(Q, D0, q_scale=q_scale, d_scale=torch.ones(shape[:2], device=device))
        assert got.shape == (2, shape[0]) and got.eq(0).all()
    none = kdops.maxsim_quantized(Q[:0], D[:0].to(device), q_scale=q_scale[:0], d_scale=d_scale[:0].to(device))
    assert none.shape == (0, 4)


def test_same_bits_at_any_thread_count_and_layout_in_memory():
    """Items are whole (query, doc) columns: scores do not depend on the thread count; a
    non-contiguous D (a permuted view) gives the scores of its contiguous copy."""
    gen = torch.Generator().manual_seed(13)
    Q, D = _int8(gen, (3, 32, 64)), _int8(gen, (64, 40, 300)).permute(2, 1, 0)  # [300, 40, 64] view
    q_scale, d_scale = _scale(gen, (3, 32)), _scale(gen, (300, 40))
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(kdops.maxsim_quantized(Q, D, q_scale=q_scale, d_scale=d_scale))
            out.append(kdops.maxsim_quantized(Q, D.contiguous(), q_scale=q_scale, d_scale=d_scale))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, out[0]) for x in out[1:])


# --- quantization helpers ---------------------------------------------------------------------


def test_quantize_int8_is_symmetric_per_token():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, 16, generator=gen)
    x[0, 0] = 0
    q, scale = kdops.quantize_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 5)
    torch.testing.assert_close(scale, x.abs().amax(-1) / 127)
    assert q[0, 0].eq(0).all() and scale[0, 0] == 0
    assert q.abs().amax(-1)[scale > 0].eq(127).all()  # the largest entry maps to +-127
    assert ((q.float() * scale[..., None] - x).abs() <= scale[..., None] / 2 + 1e-7).all()


def test_quantize_fp8_keeps_e4m3_precision():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(4, 32, generator=gen)
    v, scale = kdops.quantize_fp8(x)
    assert v.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(v.float().abs().amax(-1), torch.full((4,), 448.0))
    decoded = reference.dequantize(v, scale)
    assert ((decoded - x).abs() <= x.abs() * 2**-4 + scale[..., None] * 2**-9).all()  # 3 mantissa bits


# --- residual-compressed docs (ColBERT/PLAID) --------------------------------------------------


def _colbert_index(gen, tokens, nbits, n_centroids=16):
    """Codes built the way ColBERT's indexer does: centroids from the data (here a sample of
    normalised tokens), buckets from the quantiles of the residuals, residuals bucketed and
    bit-packed (kdops.residual_buckets / residual_compress)."""
    pick = torch.randperm(tokens.shape[0], generator=gen)[:n_centroids]
    centroids = tokens[pick].clone()
    codes = (tokens @ centroids.T).argmax(-1)
    cutoffs, weights = kdops.residual_buckets(tokens - centroids[codes], nbits)
    return centroids, cutoffs, weights


def _normalised(gen, shape):
    return torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=-1)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_residual_packing_is_colberts(nbits):
    """The bit order of ColBERT's ResidualCodec.binarize: each dimension's bucket as nbits bits,
    least significant first, the flat stream packed by numpy.packbits (first bit in the most
    significant place); reference.residual_decompress reads it back."""
    gen = torch.Generator().manual_seed(9)
    dim = 32
    x = _normalised(gen, (50, dim))
    centroids, cutoffs, weights = _colbert_index(gen, x, nbits)
    codes, packed = kdops.residual_compress(x, centroids, cutoffs)
    buckets = torch.bucketize(x - centroids[codes.long()], cutoffs)
    bits = ((buckets[..., None] >> torch.arange(nbits)) & 1).to(torch.uint8)  # [50, d, nbits]
    expected = np.packbits(bits.flatten().numpy()).reshape(50, dim * nbits // 8)
    assert np.array_equal(packed.numpy(), expected)
    decoded = reference.residual_decompress(codes, packed, centroids, weights)
    torch.testing.assert_close(decoded, torch.nn.functional.normalize(centroids[codes.long()] + weights[buckets], dim=-1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_residual_equals_decode_then_score(isa, nbits, layout, monkeypatch):
    monkeypatch.setenv("KDOPS_CPU_ISA", isa)
    gen = torch.Generator().manual_seed(10)
    nq, lq, k, ld, dim = 2, 33, 4, 19, 64
    docs = _normalised(gen, _docs_shape(layout, nq, k, ld, dim))
    centroids, cutoffs, weights = _colbert_index(gen, docs.reshape(-1, dim), nbits)
    codes, residuals = kdops.residual_compress(docs, centroids, cutoffs)
    assert codes.shape == docs.shape[:-1] and residuals.shape == (*docs.shape[:-1], dim * nbits // 8)
    Q = _normalised(gen, (nq, lq, dim))
    q_mask, d_mask = _masks(gen, nq, lq, codes.shape)
    got = kdops.maxsim_residual(Q, codes, residuals, centroids, weights, q_mask, d_mask, length_normalize=True)
    decoded = reference.residual_decompress(codes, residuals, centroids, weights)
    expected = reference.maxsim(Q.double(), decoded.double(), q_mask, d_mask, length_normalize=True)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, kdops.maxsim(Q, decoded, q_mask, d_mask, length_normalize=True), rtol=1e-6, atol=1e-6)
    assert torch.equal(got, kdops.maxsim_residual(Q, codes.long(), residuals, centroids, weights, q_mask, d_mask,
                                                  length_normalize=True))


@pytest.mark.skipif(len(ISAS) < 2, reason="one ISA path on this CPU")
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("dim", [128, 40, 24])
def test_residual_decoder_gives_the_same_bits_on_every_isa_path(nbits, dim, monkeypatch):
    """The AVX-512 residual decoder (table lookups in a register) and the cloned loops give the
    same decoded tokens, bit for bit, at dims with and without a tail of the 16-lane steps: query
    q is the one-hot token e_q and each doc one token, so score[q, k] is element q of decoded
    token k exactly (the products with 0 and the sums with 0 are exact on every path)."""
    gen = torch.Generator().manual_seed(12)
    docs = _normalised(gen, (48, 1, dim))
    centroids, cutoffs, weights = _colbert_index(gen, docs.reshape(-1, dim), nbits)
    codes, residuals = kdops.residual_compress(docs, centroids, cutoffs)
    Q = torch.eye(dim).reshape(dim, 1, dim)
    decoded = {}
    for isa in ISAS:
        monkeypatch.setenv("KDOPS_CPU_ISA", isa)
        decoded[isa] = kdops.maxsim_residual(Q, codes, residuals, centroids, weights).T
    assert torch.equal(decoded["avx512"].view(torch.int32), decoded["generic"].view(torch.int32))
    expected = reference.residual_decompress(codes, residuals, centroids, weights)[:, 0]
    torch.testing.assert_close(decoded["avx512"], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", CUDA_KERNEL_BACKENDS, indirect=True)
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_residual_matches_decode_then_score(device, nbits, layout):
    """On CUDA each doc tile is decoded into shared memory as fp16 and Q is rounded to fp16: every
    product is then within (2^-10 + 2^-20) of its exact value (two roundings of 2^-11, and the
    decode's float32 inverse norm, rsqrtf, within 2 ulp), so the scores are within that times
    sum_i max_j sum_e |Q_ie D_je| (plus 1e-5 for float32 sums) of decode-then-score; d = 72 > 64
    (two mma steps, a partial one), docs over two tiles."""
    gen = torch.Generator().manual_seed(15)
    nq, lq, k, ld, dim = 2, 21, 3, 70, 72
    docs = _normalised(gen, _docs_shape(layout, nq, k, ld, dim))
    centroids, cutoffs, weights = _colbert_index(gen, docs.reshape(-1, dim), nbits)
    codes, residuals = kdops.residual_compress(docs, centroids, cutoffs)
    Q = _normalised(gen, (nq, lq, dim))
    q_mask, d_mask = _masks(gen, nq, lq, codes.shape)
    got, argmax = (t.cpu() for t in ops().maxsim_residual.default(
        *_to(device, Q, codes, residuals, centroids, weights, q_mask, d_mask), True, True))
    decoded = reference.residual_decompress(codes, residuals, centroids, weights)
    expected = reference.maxsim(Q.double(), decoded.double(), q_mask, d_mask, length_normalize=True)
    equation = "qid,njd->qnij" if decoded.dim() == 3 else "qid,qnjd->qnij"
    magnitudes = torch.einsum(equation, Q.abs().double(), decoded.abs().double())
    bound = (2.0**-10 + 2.0**-20) * (magnitudes.amax(-1) * q_mask[:, None, :]).sum(-1) / q_mask.sum(1).clamp(min=1)[:, None] + 1e-5
    assert ((got.double() - expected).abs() <= bound).all(), ((got.double() - expected).abs() / bound).max()
    assert argmax.shape == (nq, k, lq) and argmax[~q_mask[:, None, :].expand_as(argmax)].eq(-1).all()
    for_codes_int64 = ops().maxsim_residual.default(*_to(device, Q, codes.long(), residuals, centroids, weights,
                                                            q_mask, d_mask), True, False)[0]
    assert torch.equal(for_codes_int64.cpu(), got)


# --- errors, inference only, torch.compile -----------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", ["q_scale", "d_scale"])
def test_non_finite_scales_are_refused(name, bad):
    """The scale check compares the scales' min and max (a NaN becomes both) with 0 and float32's
    largest: a NaN or an infinity anywhere (here the last value) is refused."""
    gen = torch.Generator().manual_seed(16)
    Q, D = _int8(gen, (1, 3, 8)), _int8(gen, (3, 101, 8))
    scales = dict(q_scale=_scale(gen, (1, 3)), d_scale=_scale(gen, (3, 101)))
    scales[name].view(-1)[-1] = bad
    with pytest.raises(ValueError, match=f"{name} must hold finite values >= 0"):
        kdops.maxsim_quantized(Q, D, **scales)


def test_bad_arguments_are_refused_by_name():
    gen = torch.Generator().manual_seed(11)
    Q, D = _int8(gen, (1, 2, 8)), _int8(gen, (3, 4, 8))
    qs, ds = torch.ones(1, 2), torch.ones(3, 4)
    with pytest.raises(ValueError, match="q_scale .* is required"):
        kdops.maxsim_quantized(Q, D, d_scale=ds)
    with pytest.raises(ValueError, match="q_scale is only accepted"):
        kdops.maxsim_quantized(Q.float(), D, q_scale=qs, d_scale=ds)
    with pytest.raises(TypeError, match="D must be int8 or float8_e4m3fn"):
        kdops.maxsim_quantized(Q.float(), D.float(), d_scale=ds)
    with pytest.raises(ValueError, match="d_scale must hold finite values >= 0"):
        kdops.maxsim_quantized(Q, D, q_scale=qs, d_scale=-ds)
    with pytest.raises(ValueError, match="d_scale must be D.shape"):
        kdops.maxsim_quantized(Q, D, q_scale=qs, d_scale=ds[:2])
    with pytest.raises(ValueError, match="embedding size"):
        kdops.maxsim_quantized(Q, D[..., :4], q_scale=qs, d_scale=ds)
    codes = torch.zeros(3, 4, dtype=torch.int32)
    residuals = torch.zeros(3, 4, 2, dtype=torch.uint8)  # d = 8, 2 bits
    Qf, centroids, weights = torch.randn(1, 2, 8), torch.randn(5, 8), torch.randn(4)
    with pytest.raises(IndexError, match=r"codes must be centroid ids in \[0, 5\)"):
        kdops.maxsim_residual(Qf, codes + 5, residuals, centroids, weights)
    with pytest.raises(ValueError, match="nbits 1, 2 or 4"):
        kdops.maxsim_residual(Qf, codes, torch.zeros(3, 4, 3, dtype=torch.uint8), centroids, weights)
    with pytest.raises(ValueError, match=r"bucket_weights must be \[2\^nbits\] = \[4\]"):
        kdops.maxsim_residual(Qf, codes, residuals, centroids, weights[:2])


def test_inference_only_refuses_requires_grad():
    Q, D = torch.randn(1, 2, 8, requires_grad=True), torch.zeros(3, 4, 8, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="forward only .* Q requires grad"):
        kdops.maxsim_quantized(Q, D, d_scale=torch.ones(3, 4))
    with torch.no_grad():
        assert kdops.maxsim_quantized(Q, D, d_scale=torch.ones(3, 4)).shape == (1, 3)


def test_cuda_kernels_and_the_fp16_range_of_a_float_query():
    """Both ops have CUDA kernels (and run on the simulator when it is built). On CUDA a float32 Q
    is rounded to fp16, so a finite |Q| > 65504 is refused (the kernel flags it as it stages Q,
    the op asserts the flag on the device; the simulator raises at once); infinities are fp16
    values and are scored."""
    backends = kdops.build_info()["ops"]
    for op in ("maxsim_quantized", "maxsim_residual"):
        assert ("CUDA" in backends[op]) == built_with_cuda(), backends[op]
        assert ("sim" in backends[op]) == built_with_simulator(), backends[op]
    if "sim" not in DEVICES:  # (on a GPU the device-side assert would end the CUDA context)
        pytest.skip("kdops._C_sim not built")
    Qf, D, ds = torch.zeros(1, 1, 8), torch.zeros(1, 1, 8, dtype=torch.int8), torch.ones(1, 1)
    codes, residuals = torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, 1, 2, dtype=torch.uint8)
    centroids, weights = torch.ones(1, 8), torch.zeros(4)
    with on_backend("sim"):
        Qf[0, 0, 3] = 7e4
        with raises_value_check("sim", "within fp16's range"):
            kdops.maxsim_quantized(Qf, D, d_scale=ds)
        with raises_value_check("sim", "within fp16's range"):
            kdops.maxsim_residual(Qf, codes, residuals, centroids, weights)
        Qf[0, 0, 3] = float("inf")  # scored: inf * 0 = NaN in the int8 doc's product
        assert kdops.maxsim_quantized(Qf, D, d_scale=ds).isnan().all()
        assert kdops.maxsim_residual(Qf, codes, residuals, centroids, weights).isinf().all()


@pytest.mark.sim
def test_cuda_fp16_range_flag_across_blocks():
    """The range flag is combined over the grid in the kernel's own launch (cuda/grid_none.cuh,
    on the stream's two words that each launch leaves at zero): a value staged by one block of
    many is refused, 65504 itself and -65504 are not, and the calls after a refusal see clean
    words (a good call passes, a bad one is refused again). Skipped without the simulator."""
    if "sim" not in DEVICES:
        pytest.skip("kdops._C_sim not built")
    gen = torch.Generator().manual_seed(31)
    # Lq = 1: groups of 4 queries, so 3 groups x 5 docs = 15 blocks; query 5 is in the second group.
    Q, D, ds = torch.randn(10, 1, 8, generator=gen), _int8(gen, (5, 3, 8)), _scale(gen, (5, 3))
    codes, residuals = torch.randint(0, 4, (5, 3), generator=gen, dtype=torch.int32), torch.zeros(5, 3, 2, dtype=torch.uint8)
    centroids, weights = torch.randn(4, 8, generator=gen), torch.randn(4, generator=gen)
    with on_backend("sim"):
        good = kdops.maxsim_quantized(Q, D, d_scale=ds)
        bad = Q.clone()
        bad[5, 0, 7] = -65520.0
        for _ in range(2):
            with raises_value_check("sim", "within fp16's range"):
                kdops.maxsim_quantized(bad, D, d_scale=ds)
            with raises_value_check("sim", "within fp16's range"):
                kdops.maxsim_residual(bad, codes, residuals, centroids, weights)
            assert torch.equal(kdops.maxsim_quantized(Q, D, d_scale=ds), good)
        edge = Q.clone()
        edge[5, 0, 7], edge[9, 0, 0] = 65504.0, -65504.0
        assert kdops.maxsim_quantized(edge, D, d_scale=ds).isfinite().all()
        assert kdops.maxsim_residual(edge, codes, residuals, centroids, weights).isfinite().all()


def test_opcheck_and_compile():
    gen = torch.Generator().manual_seed(12)
    Q, D = _int8(gen, (2, 3, 8)), _int8(gen, (2, 4, 5, 8))
    args = (Q, _scale(gen, (2, 3)), D, _scale(gen, (2, 4, 5)), None, torch.rand(2, 4, 5, generator=gen) > 0.3, False, True)
    torch.library.opcheck(torch.ops.kdops.maxsim_quantized.default, args)
    codes, residuals = torch.randint(0, 3, (4, 5), generator=gen), torch.randint(0, 256, (4, 5, 2), generator=gen).to(torch.uint8)
    rargs = (torch.randn(2, 3, 8, generator=gen), codes, residuals, torch.randn(3, 8, generator=gen), torch.randn(4, generator=gen),
             None, None, True, True)
    torch.library.opcheck(torch.ops.kdops.maxsim_residual.default, rargs)
    compiled = torch.compile(lambda *a: kdops.maxsim_quantized(a[0], a[2], q_scale=a[1], d_scale=a[3]), fullgraph=True)
    assert torch.equal(compiled(*args[:4]), kdops.maxsim_quantized(Q, D, q_scale=args[1], d_scale=args[3]))
