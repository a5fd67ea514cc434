// Decoders of the serving MaxSim ops' token rows (serving_tokens.h).
#include "cpu/serving_tokens.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/cpu_clones.h"

namespace kdops::cpu {

namespace {

// float8_e4m3fn bits -> float32: the same bits as c10::Float8_e4m3fn's conversion for all 256
// codes, NaNs included (tests compare them). Branch free, with masks rather than selects, so GCC
// vectorises the loops that inline it (it turned selects into branches, lane by lane, and
// widened GCC vector types' bytes one at a time).
inline float e4m3_to_float(uint8_t code) {
  const uint32_t magnitude = code & 0x7fu;
  // Normal (exponent field > 0): the exponent and mantissa fields move into float32's, the
  // exponent rebased from e4m3's bias 7 to float32's 127.
  const uint32_t normal = (magnitude << 20) + (120u << 23);
  // Subnormal (exponent field 0): mantissa * 2^-9, exact.
  const float subnormal = static_cast<float>(static_cast<int32_t>(magnitude)) * 0x1p-9f;
  uint32_t subnormal_bits;
  std::memcpy(&subnormal_bits, &subnormal, sizeof(subnormal_bits));
  const uint32_t is_subnormal = 0u - static_cast<uint32_t>(magnitude < 8);
  const uint32_t is_nan = 0u - static_cast<uint32_t>(magnitude == 0x7f);  // no infinity: S.1111.111 is NaN
  uint32_t bits = (subnormal_bits & is_subnormal) | (normal & ~is_subnormal);
  bits = (bits & ~is_nan) | (0x7ff00000u & is_nan);
  bits |= static_cast<uint32_t>(code & 0x80u) << 24;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// Rows of int8 / e4m3 codes times their scales, one rounding each (x and scale are exact in
// float32). Cloned per ISA (cpu_clones.h), and noinline: GCC 12 inlined the baseline (SSE2)
// clone of these file-local functions into TokenRows::decode, which then never reached the
// AVX-512 one (perf showed punpck/cvtdq2ps on xmm registers).
__attribute__((noinline)) KDOPS_CPU_CLONES void decode_int8(const int8_t* x, const float* scale, int64_t n, int64_t dim, float* out) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < dim; ++e) out[t * dim + e] = static_cast<float>(x[t * dim + e]) * scale[t];
}

__attribute__((noinline)) KDOPS_CPU_CLONES void decode_e4m3(const uint8_t* x, const float* scale, int64_t n, int64_t dim, float* out) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < dim; ++e) out[t * dim + e] = e4m3_to_float(x[t * dim + e]) * scale[t];
}

}  // namespace

void TokenRows::decode(int64_t row, int64_t n, float* out) const {
  switch (type) {
    case at::kFloat:
      std::memcpy(out, static_cast<const float*>(data) + row * dim, n * dim * sizeof(float));
      return;
    case at::kChar:
      decode_int8(static_cast<const int8_t*>(data) + row * dim, scale + row, n, dim, out);
      return;
    case at::kFloat8_e4m3fn:
#if defined(__x86_64__) || defined(__i386__)
      if (isa == CpuIsa::avx512) {
        decode_e4m3_avx512(static_cast<const uint8_t*>(data) + row * dim, scale + row, n, dim, out);
        return;
      }
#endif
      decode_e4m3(static_cast<const uint8_t*>(data) + row * dim, scale + row, n, dim, out);
      return;
    default:
      TORCH_CHECK(false, "TokenRows: no decoder for ", type);
  }
}

ResidualRows::ResidualRows(const int32_t* codes, const uint8_t* residuals, const float* centroids,
                           const float* bucket_weights, int64_t dim, int nbits, CpuIsa isa)
    : codes(codes), residuals(residuals), centroids(centroids), dim(dim), nbits(nbits), isa(isa) {
  const int per_byte = 8 / nbits;
  weight_of_byte.resize(256 * per_byte);
  for (int byte = 0; byte < 256; ++byte) {
    for (int p = 0; p < per_byte; ++p) {
      int bucket = 0;
      for (int k = 0; k < nbits; ++k) bucket |= ((byte >> (7 - p * nbits - k)) & 1) << k;
      weight_of_byte[byte * per_byte + p] = bucket_weights[bucket];
    }
  }
  // A byte whose first dimension's bits are f: f << (8 - nbits).
  weight_of_field.assign(16, 0.0f);
  for (int f = 0; f < (1 << nbits); ++f) weight_of_field[f] = weight_of_byte[(f << (8 - nbits)) * per_byte];
}

namespace {

typedef float Floats16 __attribute__((vector_size(64)));

// One token: x = centroid + the weights of its packed buckets (8 / nbits per byte), then
// x / max(||x||, kNormEps). The squares are summed in 16 interleaved partial sums (a fixed order;
// a single running sum would chain every add on the last one's latency), held in one vector:
// as a float array, GCC kept them on the stack, one scalar FMA through memory per element, the
// bulk of the decoding time (perf).
template <int kPerByte>
KDOPS_CPU_CLONES void decode_residual(const float* centroid, const uint8_t* packed, const float* weight_of_byte,
                                      int64_t dim, float* x) {
  // A byte's kPerByte dimensions as one vector (GCC added them one scalar at a time).
  typedef float Floats __attribute__((vector_size(kPerByte * sizeof(float))));
  for (int64_t b = 0; b < dim / kPerByte; ++b) {
    Floats c, w;
    std::memcpy(&c, centroid + b * kPerByte, sizeof(c));
    std::memcpy(&w, weight_of_byte + packed[b] * kPerByte, sizeof(w));
    c += w;
    std::memcpy(x + b * kPerByte, &c, sizeof(c));
  }
  constexpr int kPartial = 16;
  Floats16 partial = {};
  int64_t e = 0;
  for (; e + kPartial <= dim; e += kPartial) {
    Floats16 v;
    std::memcpy(&v, x + e, sizeof(v));
    partial += v * v;
  }
  for (; e < dim; ++e) partial[e % kPartial] += x[e] * x[e];
  float squares = 0;
  for (int r = 0; r < kPartial; ++r) squares += partial[r];
  const float norm = std::max(std::sqrt(squares), kNormEps);
  for (int64_t e = 0; e < dim; ++e) x[e] /= norm;
}

}  // namespace

void ResidualRows::decode(int64_t row, int64_t n, float* out) const {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == CpuIsa::avx512) {
    decode_residual_avx512(*this, row, n, out);
    return;
  }
#endif
  const int64_t bytes = dim * nbits / 8;
  for (int64_t t = 0; t < n; ++t) {
    const float* centroid = centroids + int64_t(codes[row + t]) * dim;
    const uint8_t* packed = residuals + (row + t) * bytes;
    float* x = out + t * dim;
    if (nbits == 1) decode_residual<8>(centroid, packed, weight_of_byte.data(), dim, x);
    if (nbits == 2) decode_residual<4>(centroid, packed, weight_of_byte.data(), dim, x);
    if (nbits == 4) decode_residual<2>(centroid, packed, weight_of_byte.data(), dim, x);
  }
}

}  // namespace kdops::cpu
