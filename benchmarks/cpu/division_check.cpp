// csrc/cpu/divide_avx512.h's division (one reciprocal, Markstein's correction) against
// _mm512_div_ps, bit for bit, wherever its conditions hold (reciprocal_floor(b) <= |a| <= 2 b):
// every one of the 2^32 float32 bit patterns of a against each b below, then 10^8 random pairs
// with |a| <= b (b's exponent spread over float32's range, a's 0-40 binades below it). Prints the
// lanes, the share within the conditions and how many of those differ (expected 0).
//
//   g++ -O2 -mavx512f -Icsrc -o /tmp/division_check benchmarks/cpu/division_check.cpp && /tmp/division_check
#include <immintrin.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "cpu/divide_avx512.h"

namespace {

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

struct Count {
  uint64_t lanes = 0, differ = 0, fast = 0;
};

// Lanes of a against b: those within divide_by_reciprocal's conditions (reciprocal_floor(b) <=
// |a| <= 2 b) compared with vdivps bit for bit; the others are divided by vdivps in the decoder.
void compare(__m512 a, float b, Count& count) {
  const __m512 vb = _mm512_set1_ps(b), magnitude = _mm512_abs_ps(a);
  const __mmask16 within = _mm512_mask_cmp_ps_mask(
      _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(kdops::cpu::reciprocal_floor(b)), _CMP_GE_OQ), magnitude,
      _mm512_add_ps(vb, vb), _CMP_LE_OQ);
  const __m512 want = _mm512_div_ps(a, vb);
  const __m512 got = kdops::cpu::divide_by_reciprocal(a, vb, _mm512_set1_ps(1.0f / b));
  count.lanes += 16;
  count.fast += __builtin_popcount(within);
  count.differ += __builtin_popcount(_mm512_mask_cmpneq_epi32_mask(within, _mm512_castps_si512(want), _mm512_castps_si512(got)));
}

}  // namespace

int main() {
  const float awkward[] = {1.0f,          3.0f,          from_bits(0x3fffffff) /* 1.9999999 */,
                           0x1p-126f,     from_bits(1) /* smallest subnormal */,
                           from_bits(0x00400001),        0x1p120f,      1e-12f,        0.70710677f,
                           1.1754942e-38f /* largest subnormal */, 0x1p100f, 0x1.000002p100f,
                           0x1p-100f,     0x1.fffffep-101f,             -3.0f,         0.0f,
                           __builtin_inff(), __builtin_nanf("")};
  std::mt19937 random(31);
  float spread[8];
  for (float& b : spread) b = from_bits(0x00800000u + random() % (0x7f000000u - 0x00800000u));  // positive normal
  bool ok = true;
  const auto report = [&](const char* what, const Count& c) {
    std::printf("%-34s %11" PRIu64 " lanes, %.1f%% within, %" PRIu64 " differ\n", what, c.lanes,
                100.0 * c.fast / c.lanes, c.differ);
    ok = ok && c.differ == 0;
  };
  const __m512i steps = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const auto exhaustive = [&](float b) {
    Count c;
    for (uint64_t base = 0; base < (uint64_t(1) << 32); base += 16) {
      const __m512i bits = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(base)), steps);
      compare(_mm512_castsi512_ps(bits), b, c);
    }
    char what[64];
    std::snprintf(what, sizeof what, "all a, b = %a", b);
    report(what, c);
  };
  for (float b : awkward) exhaustive(b);
  for (float b : spread) exhaustive(b);

  // Random pairs: b positive normal, a 0-40 binades below it with a random mantissa and sign.
  Count pairs;
  alignas(64) float a[16];
  for (long i = 0; i < 100000000 / 16; ++i) {
    const uint32_t b_bits = 0x00800000u + random() % (0x7f000000u - 0x00800000u);
    const float b = from_bits(b_bits);
    for (float& x : a) {
      const int below = static_cast<int>(random() % 41);
      const int exponent = static_cast<int>(b_bits >> 23) - below;
      const uint32_t magnitude = exponent <= 0 ? random() % 0x00800000u : (uint32_t(exponent) << 23) | (random() % 0x00800000u);
      x = from_bits(magnitude | (random() & 0x80000000u));
      if (__builtin_fabsf(x) > b) x = b;
    }
    compare(_mm512_load_ps(a), b, pairs);
  }
  report("random pairs |a| <= b", pairs);
  std::printf(ok ? "all equal\n" : "DIFFERENCES\n");
  return ok ? 0 : 1;
}
