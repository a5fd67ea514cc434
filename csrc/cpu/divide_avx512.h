// x / b in 16 float32 lanes with the bits of _mm512_div_ps(x, b), from one reciprocal of b: a
// multiply and two FMAs a vector where vdivps waits on the divider (perf put 37% of the residual
// decoder's samples on its 8 divisions per token; docs/performance.md has the timings).
//
// Markstein's theorem (Handbook of Floating-Point Arithmetic, division by FMA): with y = RN(1/b)
// and q a faithful approximation of x/b, the remainder r = fma(-q, b, x) is exact and
// RN(fma(r, y, q)) = RN(x/b), if nothing underflows or overflows. q = RN(x y) serves as that
// approximation; benchmarks/cpu/division_check.cpp compares the sequence with vdivps for every
// float32 x against awkward b, and 10^8 random pairs: no difference.
//
// Its conditions, as used here: b in [2^-100, 2^100] (y normal, correctly rounded), |x| >=
// 2^-100 max(1, b) (q >= 2^-100 stays normal, and r's bits, multiples of ulp(q) ulp(b) >= 2^-47
// ulp(x), stay above float32's subnormal floor), |x| <= 2 b (q finite). A token divided by its
// norm has |x_e| <= b (1 + 2^-22) and a NaN or infinite b where an element is NaN or infinite, so
// the caller checks the smallest |x_e| of a token against reciprocal_floor(b) and divides tokens
// that fail (zeros, tiny elements, norms out of range) by vdivps.
// Needs AVX-512F: included after a target pragma or built with -mavx512f.
#pragma once

#include <immintrin.h>

namespace kdops::cpu {

// The smallest |x| that divide_by_reciprocal divides by b exactly; +inf when b is outside
// [2^-100, 2^100] or NaN (no x then).
inline float reciprocal_floor(float b) {
  return b >= 0x1p-100f && b <= 0x1p100f ? 0x1p-100f * (b > 1.0f ? b : 1.0f) : __builtin_inff();
}

// x / b with vdivps's bits for reciprocal_floor(b) <= |x| <= 2 b; y = 1 / b (rounded).
inline __m512 divide_by_reciprocal(__m512 x, __m512 b, __m512 y) {
  const __m512 q = _mm512_mul_ps(x, y);
  return _mm512_fmadd_ps(_mm512_fnmadd_ps(q, b, x), y, q);  // q + r y, r = x - q b exact
}

}  // namespace kdops::cpu
