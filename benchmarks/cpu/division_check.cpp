// csrc/cpu/divide_avx512.h's division (one reciprocal, Markstein's correction, vdivps on the lanes
// outside the theorem's conditions) against _mm512_div_ps, bit for bit: every one of the 2^32
// float32 bit patterns of a against each b below, then 10^8 random pairs with |a| <= b (b's
// exponent spread over float32's range, a's 0-40 binades below it). Prints the lanes compared,
// those that differ (expected 0) and those the Markstein path gave (not divided by vdivps).
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

// Lanes of a against b: compared with vdivps; `fast` counts those the reciprocal path gave.
void compare(__m512 a, float b, Count& count) {
  const kdops::cpu::DivideAvx512 divide(b);
  const __m512 want = _mm512_div_ps(a, _mm512_set1_ps(b));
  const __m512 got = divide(a);
  count.lanes += 16;
  count.differ += __builtin_popcount(_mm512_cmpneq_epi32_mask(_mm512_castps_si512(want), _mm512_castps_si512(got)));
  count.fast += 16 - __builtin_popcount(divide.outside_theorem(_mm512_mul_ps(a, divide.reciprocal()), 0xffff));
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
    std::printf("%-34s %11" PRIu64 " lanes, %" PRIu64 " differ, %.1f%% by the reciprocal\n", what, c.lanes,
                c.differ, 100.0 * c.fast / c.lanes);
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
