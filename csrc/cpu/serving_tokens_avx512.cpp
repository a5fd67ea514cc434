// The serving token decoders (serving_tokens.h) for AVX-512, each giving the bits of its cloned
// loop in serving_tokens.cpp (the tests compare them, KDOPS_CPU_ISA=avx512 against generic).
//
// float8_e4m3fn rows (decode_e4m3_avx512): 16 codes a step through the half-to-float conversion
// (vcvtph2ps), where the generic decoder builds float32's fields in integer arithmetic: 12 vector
// instructions a step, against 84 per 4 steps in GCC 12's AVX-512 clone of that loop.
//
// An e4m3 code's fields moved into a binary16's (the sign to bit 15, exponent and mantissa to
// bits 14..7) make a half of the same fields, whose exponent bias is 15 instead of 7: the code's
// value times 2^-8, subnormals included (m 2^-9 lands on the half subnormal m 2^-17), converted
// to float32 exactly; times 256, exact again. The code S.1111.111, e4m3fn's NaN (it has no
// infinity), lands on the half 1.875 and is set to the generic decoder's NaN, 0x7ff00000 with
// the sign. Then times the row's scale, the one rounding: the generic decoder's bits for all 256
// codes (tests/test_maxsim_serving.py reads each back on every ISA path).
//
// Residual rows (decode_residual_avx512): 16 dimensions a step, each one's bucket bits moved to its
// lane (a byte shuffle, a shift per lane) and looked up in a register holding the 2^nbits weights
// (vpermps), where the cloned loop loads a byte's weights from a 256-entry table and adds them 2-8
// floats at a time.
#if defined(__x86_64__) || defined(__i386__)
#include <cstdint>

// Before the target pragma: the header's inline functions (ATen's among them) stay baseline code,
// whichever copy of them the linker keeps.
#include "cpu/serving_tokens.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,f16c")
#include <immintrin.h>

namespace kdops::cpu {

namespace {

// 16 codes (lanes past `lanes` as code 0, not stored) to float32 times `scale`, at out.
inline void decode16(const uint8_t* x, __mmask16 lanes, __m512 scale, float* out) {
  const __m128i code = _mm_maskz_loadu_epi8(lanes, x);
  __m256i half = _mm256_cvtepu8_epi16(code);
  // (c + (c & 0x80)) << 7: the magnitude to bits 13..7; the sign, added to itself, carries to 15.
  half = _mm256_slli_epi16(_mm256_add_epi16(half, _mm256_and_si256(half, _mm256_set1_epi16(0x80))), 7);
  // maskz: _mm512_cvtph_ps passes an undefined vector GCC 12 warns about (-Wall).
  __m512i bits = _mm512_castps_si512(_mm512_maskz_cvtph_ps(lanes, half));
  const __mmask16 nan = _mm_cmpeq_epi8_mask(_mm_or_si128(code, _mm_set1_epi8(-128)), _mm_set1_epi8(-1));
  bits = _mm512_mask_or_epi32(bits, nan, bits, _mm512_set1_epi32(0x7ff00000));
  const __m512 value = _mm512_mul_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(256.0f));
  _mm512_mask_storeu_ps(out, lanes, _mm512_mul_ps(value, scale));
}

}  // namespace

void decode_e4m3_avx512(const uint8_t* x, const float* scale, int64_t n, int64_t dim, float* out) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (dim % 16)) - 1);
  for (int64_t t = 0; t < n; ++t) {
    const __m512 s = _mm512_set1_ps(scale[t]);
    int64_t e = 0;
    for (; e + 16 <= dim; e += 16) decode16(x + t * dim + e, 0xffff, s, out + t * dim + e);
    if (e < dim) decode16(x + t * dim + e, tail, s, out + t * dim + e);
  }
}

void decode_residual_avx512(const ResidualRows& rows, int64_t row, int64_t n, float* out) {
  const int nbits = rows.nbits;
  const int64_t dim = rows.dim, bytes = dim * nbits / 8, full = dim / 16 * 16;
  // Lane i's bits are those of byte i * nbits / 8 (a dimension's bits never straddle two bytes),
  // 8 - nbits - i * nbits % 8 bits up: the shuffle puts that byte (of the 16-dim step's 2 * nbits
  // bytes, broadcast to each 128-bit lane) at the bottom of lane i, zeros above it (index -128).
  alignas(64) int8_t byte_of_lane[64];
  alignas(64) int32_t shift_of_lane[16];
  for (int i = 0; i < 16; ++i) {
    for (int b = 0; b < 4; ++b) byte_of_lane[4 * i + b] = static_cast<int8_t>(b == 0 ? i * nbits / 8 : -128);
    shift_of_lane[i] = 8 - nbits - i * nbits % 8;
  }
  const __m512i select = _mm512_load_si512(byte_of_lane), shift = _mm512_load_si512(shift_of_lane);
  const __m512i field_mask = _mm512_set1_epi32((1 << nbits) - 1);
  const __m512 weights = _mm512_loadu_ps(rows.weight_of_field.data());
  const __mmask16 tail = static_cast<__mmask16>((1u << (dim - full)) - 1);
  const __mmask16 tail_bytes = static_cast<__mmask16>((1u << ((dim - full) * nbits / 8)) - 1);
  // A group of tokens a pass at a time: their sums, then their norms, then their divisions. Token
  // by token, each waited on its own chain (16 partial sums added in order, sqrt, division).
  constexpr int64_t kGroup = 16;
  for (int64_t t0 = 0; t0 < n; t0 += kGroup) {
    const int64_t m = n - t0 < kGroup ? n - t0 : kGroup;
    alignas(64) float partials[kGroup][16];
    float norms[kGroup];
    for (int64_t t = t0; t < t0 + m; ++t) {
      const float* centroid = rows.centroids + int64_t(rows.codes[row + t]) * dim;
      const uint8_t* packed = rows.residuals + (row + t) * bytes;
      float* x = out + t * dim;
      // Dims e .. e + 15 (the lanes in `lanes`): centroid + weight.
      const auto step = [&](int64_t e, __mmask16 lanes, __mmask16 lane_bytes) {
        const __m128i step_bytes = _mm_maskz_loadu_epi8(lane_bytes, packed + e * nbits / 8);
        // maskz forms: the plain ones pass an undefined vector GCC 12 warns about (-Wall).
        const __m512i by_lane = _mm512_shuffle_epi8(_mm512_maskz_broadcast_i32x4(lanes, step_bytes), select);
        const __m512i fields = _mm512_and_si512(_mm512_maskz_srlv_epi32(lanes, by_lane, shift), field_mask);
        return _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, centroid + e), _mm512_maskz_permutexvar_ps(lanes, fields, weights));
      };
      // The squares summed into 16 partial sums as the clone does: lane e % 16 takes x_e^2 in
      // order of e, one FMA each; lanes past dim are neither stored nor summed.
      __m512 partial = _mm512_setzero_ps();
      for (int64_t e = 0; e < full; e += 16) {
        const __m512 v = step(e, 0xffff, static_cast<__mmask16>((1u << (2 * nbits)) - 1));
        _mm512_storeu_ps(x + e, v);
        partial = _mm512_fmadd_ps(v, v, partial);
      }
      if (full < dim) {
        const __m512 v = step(full, tail, tail_bytes);
        _mm512_mask_storeu_ps(x + full, tail, v);
        partial = _mm512_mask3_fmadd_ps(v, v, partial, tail);
      }
      _mm512_store_ps(partials[t - t0], partial);
    }
    for (int64_t t = 0; t < m; ++t) {
      float squares = 0;
      for (int r = 0; r < 16; ++r) squares += partials[t][r];
      const float length = __builtin_sqrtf(squares);
      norms[t] = length < kNormEps ? kNormEps : length;  // std::max(length, kNormEps)
    }
    for (int64_t t = t0; t < t0 + m; ++t) {
      float* x = out + t * dim;
      const __m512 norm = _mm512_set1_ps(norms[t - t0]);
      for (int64_t e = 0; e < full; e += 16) _mm512_storeu_ps(x + e, _mm512_div_ps(_mm512_loadu_ps(x + e), norm));
      if (full < dim) _mm512_mask_storeu_ps(x + full, tail, _mm512_div_ps(_mm512_maskz_loadu_ps(tail, x + full), norm));
    }
  }
}

}  // namespace kdops::cpu
#endif
