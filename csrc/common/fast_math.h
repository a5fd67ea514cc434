// exp and log for float without calls or branches, so that the compiler vectorises loops over
// them on the CPU (glibc's expf/logf are scalar calls, and they dominated the listwise losses'
// time). Special cases are blended in with bit masks, never selected with ?: (GCC turns such
// selects into branches around the polynomial, and then refuses to vectorise the loop). Cephes' single-precision polynomials (S. Moshier): about 1 ulp on the domains below.
// The CUDA kernels use the device's own expf/logf instead (see fast_exp in plackett_luce.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "common/macros.h"

// Always inlined on the host: a call (through the PLT, in a -fPIC library) per element would
// stop the vectorisation this file exists for.
#if defined(__CUDACC__)
#define KDOPS_MATH KDOPS_HD
#else
#define KDOPS_MATH inline __attribute__((always_inline))
#endif

namespace kdops {

KDOPS_MATH float float_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

KDOPS_MATH uint32_t bits_of_float(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

// All ones where b, else zeros.
KDOPS_MATH uint32_t mask(bool b) { return 0u - static_cast<uint32_t>(b); }

// exp(x) for x <= 88 (the callers pass x <= 0): exp(x) = 2^n exp(r), n = round(x / ln2),
// |r| <= ln2 / 2; 0 below -87.3 (where exp is subnormal), +inf above 88, NaN for NaN.
KDOPS_MATH float poly_expf(float x) {
  constexpr float kHi = 88.0f, kLo = -87.33654475f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const uint32_t ux = bits_of_float(x), ax = ux & 0x7fffffffu;
  const bool nan = ax > 0x7f800000u;
  const bool negative = (ux >> 31) != 0;
  const bool under = negative & (ax > bits_of_float(-kLo));  // x < kLo, -inf included
  const bool over = !negative & !nan & (ax > bits_of_float(kHi));
  const uint32_t m_under = mask(under), m_high = mask(over | nan), m_nan = mask(nan);
  const float xc = float_from_bits((ux & ~m_under & ~m_high) | (bits_of_float(kLo) & m_under) |
                                   (bits_of_float(kHi) & m_high));
  const float t = xc * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  float r = xc - n * 0.693359375f;  // ln2 in two parts (Cody-Waite)
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(bits_of_float(t) - bits_of_float(kRound));
  const uint32_t poly = bits_of_float(y * float_from_bits(static_cast<uint32_t>(ni + 127) << 23));
  const uint32_t special = m_under | m_high;
  const uint32_t value = (0x7f800000u & mask(over)) | (ux & m_nan);  // +inf, NaN; under: 0
  return float_from_bits((poly & ~special) | (value & special));
}

// log(x) for normal x > 0 (the callers pass sums >= 1): x = m 2^e, m in [sqrt(1/2), sqrt(2));
// -inf for 0, +inf for +inf, NaN for NaN or x < 0.
KDOPS_MATH float poly_logf(float x) {
  const uint32_t ux = bits_of_float(x), ax = ux & 0x7fffffffu;
  int32_t e = static_cast<int32_t>(ux >> 23) - 126;
  const uint32_t mbits = (ux & 0x007fffffu) | 0x3f000000u;  // m in [0.5, 1)
  const bool low = mbits < 0x3f3504f3u;                     // m < sqrt(1/2)
  const float m0 = float_from_bits(mbits);
  e -= static_cast<int32_t>(low);
  const uint32_t m_low = mask(low);
  const float m = float_from_bits((bits_of_float(m0 + m0 - 1.0f) & m_low) |
                                  (bits_of_float(m0 - 1.0f) & ~m_low));
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += fe * -2.12194440e-4f;
  y -= 0.5f * z;
  const uint32_t poly = bits_of_float(m + y + fe * 0.693359375f);
  // NaN, except log(+inf) = +inf and log(0) = -inf.
  const bool positive_finite = ((ux >> 31) == 0) & (ax != 0) & (ax < 0x7f800000u);
  const uint32_t special = ~mask(positive_finite), m_inf = mask(ux == 0x7f800000u),
                 m_zero = mask(ax == 0);
  const uint32_t value = (ux & m_inf) | (0xff800000u & m_zero) | (0x7fc00000u & ~m_inf & ~m_zero);
  return float_from_bits((poly & ~special) | (value & special));
}

}  // namespace kdops
