// The int8 MaxSim panel kernel for AVX-512 VNNI (maxsim_int8_panel.h): the panel's 32 rows are
// two vectors of 16 int32 lanes; per group of 4 dims, one vpdpbusd per (token, vector) adds the 4
// products of each lane's uint8 query bytes with the token's 4 int8 bytes, broadcast. A tile of
// 4 tokens: 8 accumulators. Only called where the CPU has VNNI (maxsim_int8_panel.cpp checks).
#if defined(__x86_64__) || defined(__i386__)
#include <cstdint>
#include <cstring>

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")
#include <immintrin.h>

#include "cpu/maxsim_int8_panel.h"

namespace kdops::cpu {

namespace {

constexpr int kTokens = 4;

// The 4 bytes of a token's dims 4g..4g+3 as one int32 (dims past `dim` as 0), broadcast.
inline __m512i group_of(const int8_t* token, int64_t g, int64_t dim) {
  int32_t four = 0;
  const int64_t n = dim - 4 * g < 4 ? dim - 4 * g : 4;
  std::memcpy(&four, token + 4 * g, n);
  return _mm512_set1_epi32(four);
}

// takes_max (common/maxsim.h) per lane: no valid token yet, a larger value, or a NaN over a number.
inline void fold(__m512 v, int32_t j, __m512& best, __m512i& arg) {
  const __mmask16 take = _mm512_cmplt_epi32_mask(arg, _mm512_setzero_si512()) |
                         _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                         (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
  best = _mm512_mask_mov_ps(best, take, v);
  arg = _mm512_mask_mov_epi32(arg, take, _mm512_set1_epi32(j));
}

}  // namespace

void int8_panel_vnni(const uint8_t* panel, const int8_t* doc, int64_t length, int64_t dim,
                     const int32_t* bias, const float* scale, const bool* valid, int32_t first,
                     float* best_io, int32_t* arg_io) {
  __m512 best[2] = {_mm512_loadu_ps(best_io), _mm512_loadu_ps(best_io + 16)};
  __m512i arg[2] = {_mm512_loadu_si512(arg_io), _mm512_loadu_si512(arg_io + 16)};
  const int64_t full = dim / 4, groups = (dim + 3) / 4;
  for (int64_t t0 = 0; t0 < length; t0 += kTokens) {
    // A short last tile repeats its last token (computed, never folded).
    const int64_t n = length - t0 < kTokens ? length - t0 : kTokens;
    const int8_t* token[kTokens];
    for (int t = 0; t < kTokens; ++t) token[t] = doc + (t0 + (t < n ? t : n - 1)) * dim;
    __m512i acc[kTokens][2];
    for (int t = 0; t < kTokens; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
    for (int64_t g = 0; g < full; ++g) {
      const __m512i q0 = _mm512_loadu_si512(panel + g * 128), q1 = _mm512_loadu_si512(panel + g * 128 + 64);
      for (int t = 0; t < kTokens; ++t) {
        int32_t four;
        std::memcpy(&four, token[t] + 4 * g, 4);
        const __m512i x = _mm512_set1_epi32(four);
        acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], q0, x);
        acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], q1, x);
      }
    }
    if (groups > full) {  // the last dims, fewer than 4
      const __m512i q0 = _mm512_loadu_si512(panel + full * 128), q1 = _mm512_loadu_si512(panel + full * 128 + 64);
      for (int t = 0; t < kTokens; ++t) {
        const __m512i x = group_of(token[t], full, dim);
        acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], q0, x);
        acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], q1, x);
      }
    }
    for (int t = 0; t < n; ++t) {
      if (valid != nullptr && !valid[t0 + t]) continue;
      const __m512i b = _mm512_set1_epi32(bias[t0 + t]);
      const __m512 s = _mm512_set1_ps(scale[t0 + t]);
      const int32_t j = first + static_cast<int32_t>(t0 + t);
      for (int h = 0; h < 2; ++h)
        fold(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[t][h], b)), s), j, best[h], arg[h]);
    }
  }
  _mm512_storeu_ps(best_io, best[0]);
  _mm512_storeu_ps(best_io + 16, best[1]);
  _mm512_storeu_si512(arg_io, arg[0]);
  _mm512_storeu_si512(arg_io + 16, arg[1]);
}

}  // namespace kdops::cpu
#endif
