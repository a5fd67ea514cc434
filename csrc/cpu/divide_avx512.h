// a / b in 16 float32 lanes with the bits of _mm512_div_ps(a, b), for every a and b, from one
// reciprocal of b: an FMA-pipe multiply and two FMAs a vector where vdivps takes the divider
// (perf put 37% of the residual decoder's samples on its 8 divisions per token, 10 cycles each).
//
// Markstein's theorem (Handbook of Floating-Point Arithmetic, division by FMA): with y = RN(1/b)
// and q a faithful approximation of a/b, the remainder r = fma(-q, b, a) is exact and
// RN(fma(r, y, q)) = RN(a/b), if nothing underflows or overflows. q = RN(a * y) is used as that
// approximation; benchmarks/cpu/division_check.cpp compares the sequence with vdivps for all 2^32
// bit patterns of a against awkward b and 10^8 random pairs (docs/performance.md: no difference).
//
// Where the theorem's conditions may fail the lanes are divided by vdivps (under a mask, taken
// only when a vector has such a lane): b outside [2^-100, 2^100] or NaN (y and q then lose
// bits), and |q| outside [lo, 2^100] or NaN: |q| >= 2^-100 keeps q normal, |a| = |q| b >= 2^-100
// (lo = 2^-100 y when b < 1) keeps r's bits (multiples of ulp(q) ulp(b)) above float32's
// subnormal floor, |q| <= 2^100 keeps q finite. Zeros, infinities and NaNs all take vdivps.
// Needs AVX-512F: included after a target pragma or built with -mavx512f.
#pragma once

#include <immintrin.h>

namespace kdops::cpu {

class DivideAvx512 {
 public:
  explicit DivideAvx512(float b)
      : b_(_mm512_set1_ps(b)),
        y_(_mm512_set1_ps(1.0f / b)),
        // +inf (no |q| reaches it, NaN fails the compare too) when b is out of range or NaN.
        lo_(_mm512_set1_ps(b >= 0x1p-100f && b <= 0x1p100f ? (b < 1.0f ? 0x1p-100f * (1.0f / b) : 0x1p-100f)
                                                          : __builtin_inff())) {}

  // a / b in the lanes of `lanes` (the others: whatever, never divided by vdivps).
  __m512 operator()(__m512 a, __mmask16 lanes = 0xffff) const {
    const __m512 q = _mm512_mul_ps(a, y_);
    const __m512 exact = _mm512_fmadd_ps(_mm512_fnmadd_ps(q, b_, a), y_, q);  // q + r y, r exact
    const __mmask16 divide = outside_theorem(q, lanes);
    if (__builtin_expect(divide != 0, 0)) return _mm512_mask_div_ps(exact, divide, a, b_);
    return exact;
  }

  // The lanes of `lanes` whose q = RN(a y) is outside [lo, 2^100] or NaN: divided by vdivps.
  __mmask16 outside_theorem(__m512 q, __mmask16 lanes) const {
    const __m512 magnitude = _mm512_abs_ps(q);
    const __mmask16 in_range = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(lanes, magnitude, lo_, _CMP_GE_OQ),
                                                        magnitude, _mm512_set1_ps(0x1p100f), _CMP_LE_OQ);
    return static_cast<__mmask16>(lanes & ~in_range);
  }

  __m512 reciprocal() const { return y_; }

 private:
  __m512 b_, y_, lo_;
};

}  // namespace kdops::cpu
