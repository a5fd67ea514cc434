// The int8 MaxSim panel kernel for AVX-512 VNNI (maxsim_int8_panel.h): the panel's 32 rows are
// two vectors of 16 int32 lanes; per group of 4 dims, one vpdpbusd per (token, vector) adds the 4
// products of the token's 4 bytes, broadcast and offset to uint8, with each lane's int8 query
// bytes. A tile of kTokens tokens: 2 * kTokens independent accumulator chains. Only called where
// the CPU has VNNI (maxsim_int8_panel.cpp checks).
#if defined(__x86_64__) || defined(__i386__)
#include <cstdint>
#include <cstring>

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")
#include <immintrin.h>

#include "cpu/maxsim_int8_panel.h"

namespace kdops::cpu {

namespace {

// 8 chains cover vpdpbusd's latency at one zmm instruction a cycle (Zen 4); 6 or 8 tokens (12,
// 16 chains) measured the same or a few percent slower at the reranking shape
// (benchmarks/cpu/maxsim_int8_panel_stream.cpp).
constexpr int kTokens = 4;

// The 4 bytes of a token's dims 4g..4g+3 (dims past `dim` as 0: the panel's are 0 too), broadcast.
inline __m512i group_of(const int8_t* token, int64_t g, int64_t dim) {
  int32_t four = 0;
  std::memcpy(&four, token + 4 * g, dim - 4 * g < 4 ? dim - 4 * g : 4);
  return _mm512_set1_epi32(four);
}

// The int32 lanes as float32 (vcvtdq2ps, rounding to nearest). Not _mm512_cvtepi32_ps: GCC 12
// warns (-Wall) on the undefined vector it passes through.
inline __m512 to_float(__m512i x) {
  typedef int32_t Int32x16 __attribute__((vector_size(64)));
  typedef float Float32x16 __attribute__((vector_size(64)));
  return reinterpret_cast<__m512>(__builtin_convertvector(reinterpret_cast<Int32x16>(x), Float32x16));
}

// takes_max (common/maxsim.h) per lane for token j of value v: a larger value, or any value where
// the lane has no token yet (`fresh`). No NaN rule: the scales are finite (the op checks,
// common/maxsim_serving_inputs.h checked_scale), so every value is a number or an infinity.
inline void fold(__m512 v, int32_t j, __mmask16 fresh, __m512& best, __m512i& arg) {
  const __mmask16 take = fresh | _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
  best = _mm512_mask_mov_ps(best, take, v);
  arg = _mm512_mask_set1_epi32(arg, take, j);
}

}  // namespace

void int8_panel_vnni(const int8_t* panel, const int32_t* start, const int8_t* doc, int64_t length,
                     int64_t dim, const float* scale, const bool* valid, int32_t first,
                     float* best_io, int32_t* arg_io) {
  __m512 best[2] = {_mm512_loadu_ps(best_io), _mm512_loadu_ps(best_io + 16)};
  __m512i arg[2] = {_mm512_loadu_si512(arg_io), _mm512_loadu_si512(arg_io + 16)};
  const __m512i start0 = _mm512_loadu_si512(start), start1 = _mm512_loadu_si512(start + 16);
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));  // d ^ 0x80 = d + 128 as uint8
  // The lanes with no token yet (arg -1) take the first one folded; after it, none is fresh.
  __mmask16 fresh[2] = {_mm512_cmplt_epi32_mask(arg[0], _mm512_setzero_si512()),
                        _mm512_cmplt_epi32_mask(arg[1], _mm512_setzero_si512())};
  const int64_t full = dim / 4, groups = (dim + 3) / 4;
  for (int64_t t0 = 0; t0 < length; t0 += kTokens) {
    // A short last tile repeats its last token (computed, never folded).
    const int64_t n = length - t0 < kTokens ? length - t0 : kTokens;
    const int8_t* token[kTokens];
    for (int t = 0; t < kTokens; ++t) token[t] = doc + (t0 + (t < n ? t : n - 1)) * dim;
    __m512i acc0[kTokens], acc1[kTokens];
    for (int t = 0; t < kTokens; ++t) {
      acc0[t] = start0;
      acc1[t] = start1;
    }
    // Group g of every token of the tile, its 4 bytes from bytes(t).
    const auto group = [&](int64_t g, auto bytes) {
      const __m512i q0 = _mm512_loadu_si512(panel + g * 128), q1 = _mm512_loadu_si512(panel + g * 128 + 64);
#pragma GCC unroll 16
      for (int t = 0; t < kTokens; ++t) {
        const __m512i x = _mm512_xor_si512(bytes(t), offset);
        acc0[t] = _mm512_dpbusd_epi32(acc0[t], x, q0);
        acc1[t] = _mm512_dpbusd_epi32(acc1[t], x, q1);
      }
    };
    for (int64_t g = 0; g < full; ++g)
      group(g, [&](int t) {
        int32_t four;
        std::memcpy(&four, token[t] + 4 * g, 4);
        return _mm512_set1_epi32(four);
      });
    if (groups > full) group(full, [&](int t) { return group_of(token[t], full, dim); });  // the last dims, fewer than 4
#pragma GCC unroll 16
    for (int t = 0; t < kTokens; ++t) {
      if (t >= n || (valid != nullptr && !valid[t0 + t])) continue;
      const __m512 s = _mm512_set1_ps(scale[t0 + t]);
      const int32_t j = first + static_cast<int32_t>(t0 + t);
      fold(_mm512_mul_ps(to_float(acc0[t]), s), j, fresh[0], best[0], arg[0]);
      fold(_mm512_mul_ps(to_float(acc1[t]), s), j, fresh[1], best[1], arg[1]);
      fresh[0] = fresh[1] = 0;
    }
  }
  _mm512_storeu_ps(best_io, best[0]);
  _mm512_storeu_ps(best_io + 16, best[1]);
  _mm512_storeu_si512(arg_io, arg[0]);
  _mm512_storeu_si512(arg_io + 16, arg[1]);
}

}  // namespace kdops::cpu
#endif
