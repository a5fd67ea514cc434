// float8_e4m3fn token rows decoded for AVX-512 (serving_tokens.h decode_e4m3_avx512), 16 codes a
// step through the half-to-float conversion (vcvtph2ps), where the generic decoder
// (serving_tokens.cpp) builds float32's fields in integer arithmetic: 9 instructions a step
// instead of about 15, which perf showed the decode spending.
//
// An e4m3 code's fields moved into a binary16's (the sign to bit 15, exponent and mantissa to
// bits 14..7) make a half of the same fields, whose exponent bias is 15 instead of 7: the code's
// value times 2^-8, subnormals included (m 2^-9 lands on the half subnormal m 2^-17), converted
// to float32 exactly; times 256, exact again. The code S.1111.111, e4m3fn's NaN (it has no
// infinity), lands on the half 1.875 and is set to the generic decoder's NaN, 0x7ff00000 with
// the sign. Then times the row's scale, the one rounding: the generic decoder's bits for all 256
// codes (tests/test_maxsim_serving.py reads each back on every ISA path).
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
  // maskz: _mm512_cvtph_ps passes an undefined vector that GCC 12 warns about (-Wall).
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

}  // namespace kdops::cpu
#endif
