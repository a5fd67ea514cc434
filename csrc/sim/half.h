// CUDA's 16-bit float types __half and __nv_bfloat16 (part of cuda_sim.h). Conversions round to
// nearest even, NaN becomes the canonical 0x7fff, bit-exact with CUDA. Arithmetic is computed in
// float and rounded once, which is correctly rounded for + - * / (float has more than twice the
// 16-bit formats' precision plus two bits), so results equal the hardware's half instructions.
// (kdops' kernels mostly use ATen's c10::Half / c10::BFloat16, which work on the CPU as they are.)
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace kdops::sim::detail {

// |x| rounded to an integer, ties to even, whatever the FPU's rounding mode (x >= 0).
inline double round_half_even(double x) {
  double t = trunc(x);
  const double r = x - t;
  if (r > 0.5 || (r == 0.5 && fmod(t, 2.0) == 1.0)) t += 1.0;
  return t;
}

// IEEE binary format with kMant stored mantissa bits and exponent bias kBias, in 16 bits.
template <int kMant, int kBias>
uint16_t round_to_16bit(double d) {
  constexpr uint16_t kInf = static_cast<uint16_t>((2 * kBias + 1) << kMant);
  if (isnan(d)) return 0x7fff;
  const uint16_t sign = signbit(d) ? 0x8000 : 0;
  const double m = fabs(d);
  if (isinf(m)) return sign | kInf;
  constexpr int kMinExp = 1 - kBias;  // exponent of the smallest normal number
  if (m < ldexp(1.0, kMinExp)) {      // subnormal: a multiple of 2^(kMinExp - kMant)
    return sign | static_cast<uint16_t>(round_half_even(ldexp(m, kMant - kMinExp)));
  }
  const int e = ilogb(m);
  if (e > kBias) return sign | kInf;
  const double k = round_half_even(ldexp(m, kMant - e));  // in [2^kMant, 2^(kMant+1)]
  // k == 2^(kMant+1) carries into the exponent field, as the encoding wants.
  const uint32_t bits = (static_cast<uint32_t>(e + kBias) << kMant) + static_cast<uint32_t>(k - ldexp(1.0, kMant));
  return sign | static_cast<uint16_t>(bits >= kInf ? kInf : bits);
}

template <int kMant, int kBias>
float widen_16bit(uint16_t h) {
  const bool negative = (h & 0x8000) != 0;
  const int exponent = (h >> kMant) & (2 * kBias + 1);
  const uint32_t mantissa = h & ((1u << kMant) - 1);
  float magnitude;
  if (exponent == 2 * kBias + 1) {
    magnitude = mantissa != 0 ? NAN : INFINITY;
  } else if (exponent == 0) {
    magnitude = ldexpf(static_cast<float>(mantissa), 1 - kBias - kMant);
  } else {
    magnitude = ldexpf(static_cast<float>(mantissa | (1u << kMant)), exponent - kBias - kMant);
  }
  return negative ? -magnitude : magnitude;
}

}  // namespace kdops::sim::detail

#define KDOPS_SIM_16BIT_TYPE(Name, kMant, kBias)                                                               \
  struct Name {                                                                                                 \
    unsigned short __x;                                                                                         \
    Name() = default;                                                                                           \
    Name(float f) : __x(::kdops::sim::detail::round_to_16bit<kMant, kBias>(f)) {}                               \
    Name(double d) : __x(::kdops::sim::detail::round_to_16bit<kMant, kBias>(d)) {}                              \
    template <typename I, std::enable_if_t<std::is_integral_v<I>, int> = 0>                                     \
    Name(I i) : __x(::kdops::sim::detail::round_to_16bit<kMant, kBias>(static_cast<double>(i))) {}              \
    operator float() const { return ::kdops::sim::detail::widen_16bit<kMant, kBias>(__x); }                     \
    static Name from_bits(unsigned short bits) {                                                                \
      Name h;                                                                                                   \
      h.__x = bits;                                                                                             \
      return h;                                                                                                 \
    }                                                                                                           \
  };                                                                                                            \
  inline Name operator+(Name a, Name b) { return Name(float(a) + float(b)); }                                   \
  inline Name operator-(Name a, Name b) { return Name(float(a) - float(b)); }                                   \
  inline Name operator*(Name a, Name b) { return Name(float(a) * float(b)); }                                   \
  inline Name operator/(Name a, Name b) { return Name(float(a) / float(b)); }                                   \
  inline Name operator-(Name a) { return Name::from_bits(static_cast<unsigned short>(a.__x ^ 0x8000)); }        \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator+(Name a, T b) { return float(a) + b; }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator+(T a, Name b) { return a + float(b); }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator-(Name a, T b) { return float(a) - b; }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator-(T a, Name b) { return a - float(b); }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator*(Name a, T b) { return float(a) * b; }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator*(T a, Name b) { return a * float(b); }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator/(Name a, T b) { return float(a) / b; }                                                          \
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>                                     \
  auto operator/(T a, Name b) { return a / float(b); }                                                          \
  inline Name& operator+=(Name& a, float b) { return a = Name(float(a) + b); }                                  \
  inline Name& operator-=(Name& a, float b) { return a = Name(float(a) - b); }                                  \
  inline Name& operator*=(Name& a, float b) { return a = Name(float(a) * b); }                                  \
  inline Name& operator/=(Name& a, float b) { return a = Name(float(a) / b); }                                  \
  inline Name __hadd(Name a, Name b) { return a + b; }                                                          \
  inline Name __hsub(Name a, Name b) { return a - b; }                                                          \
  inline Name __hmul(Name a, Name b) { return a * b; }                                                          \
  inline Name __hdiv(Name a, Name b) { return a / b; }                                                          \
  inline Name __hfma(Name a, Name b, Name c) { return Name(fma(double(float(a)), double(float(b)), double(float(c)))); } \
  inline Name __hneg(Name a) { return -a; }                                                                     \
  inline Name __habs(Name a) { return Name::from_bits(static_cast<unsigned short>(a.__x & 0x7fff)); }           \
  inline bool __hisnan(Name a) { return isnan(float(a)); }                                                      \
  inline int __hisinf(Name a) { return isinf(float(a)) ? (float(a) < 0 ? -1 : 1) : 0; }                         \
  inline Name __hmax(Name a, Name b) { return __hisnan(a) ? b : (__hisnan(b) ? a : (float(a) < float(b) ? b : a)); } \
  inline Name __hmin(Name a, Name b) { return __hisnan(a) ? b : (__hisnan(b) ? a : (float(b) < float(a) ? b : a)); } \
  inline bool __heq(Name a, Name b) { return float(a) == float(b); }                                            \
  inline bool __hne(Name a, Name b) { return float(a) != float(b); }                                            \
  inline bool __hlt(Name a, Name b) { return float(a) < float(b); }                                             \
  inline bool __hle(Name a, Name b) { return float(a) <= float(b); }                                            \
  inline bool __hgt(Name a, Name b) { return float(a) > float(b); }                                             \
  inline bool __hge(Name a, Name b) { return float(a) >= float(b); }

KDOPS_SIM_16BIT_TYPE(__half, 10, 15)
KDOPS_SIM_16BIT_TYPE(__nv_bfloat16, 7, 127)
#undef KDOPS_SIM_16BIT_TYPE

using half = __half;
using nv_bfloat16 = __nv_bfloat16;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __double2half(double d) { return __half(d); }
inline float __half2float(__half h) { return float(h); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __ushort_as_half(unsigned short bits) { return __half::from_bits(bits); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16(d); }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return static_cast<short>(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) { return __nv_bfloat16::from_bits(bits); }
