// The AVX-512 sorting network of rank_sort_network.h: 8 keys a vector, its merge stages in
// rank_sort_network_body.h. Within a vector, distances pair lanes through a permutation, with a
// mask choosing which lane keeps the max.
#include "cpu/rank_sort_network.h"

#ifdef KDOPS_RANK_SORT_NETWORK

#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq")
// GCC 12's permutation intrinsics start from an operand initialised from itself
// (_mm512_undefined_epi32), which -Wall reports at every inlined use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "cpu/rank_sort_network_body.h"

namespace kdops::cpu {
namespace {

using Vec = __m512i;  // 8 keys

// Lane permutations, lane i taking lane p(i): pairs at distance 1, 2, 4 and mirror images.
Vec swap1(Vec v) { return _mm512_shuffle_epi32(v, _MM_PERM_BADC); }       // 1 0 3 2 5 4 7 6
Vec swap2(Vec v) { return _mm512_permutex_epi64(v, 0x4E); }               // 2 3 0 1 6 7 4 5
Vec swap4(Vec v) { return _mm512_shuffle_i64x2(v, v, 0x4E); }             // 4 5 6 7 0 1 2 3
Vec mirror4(Vec v) { return _mm512_permutex_epi64(v, 0x1B); }             // 3 2 1 0 7 6 5 4
Vec reverse(Vec v) { return _mm512_permutexvar_epi64(_mm512_set_epi64(0, 1, 2, 3, 4, 5, 6, 7), v); }

// Compare-exchange of each lane with its partner p (a permutation of v that pairs lanes): the
// lanes in `upper`, the higher lane of each pair, keep the larger key.
Vec exchange(Vec v, Vec p, __mmask8 upper) {
  return _mm512_mask_max_epu64(_mm512_min_epu64(v, p), upper, v, p);
}

// Sorts one vector: runs of 1 -> 2 -> 4 -> 8 keys, each merge a flip then half-cleaners.
Vec sort8(Vec v) {
  v = exchange(v, swap1(v), 0xAA);
  v = exchange(v, mirror4(v), 0xCC);
  v = exchange(v, swap1(v), 0xAA);
  v = exchange(v, reverse(v), 0xF0);
  v = exchange(v, swap2(v), 0xCC);
  return exchange(v, swap1(v), 0xAA);
}

// Sorts a bitonic vector: the half-cleaners of distance 4, 2, 1.
Vec clean8(Vec v) {
  v = exchange(v, swap4(v), 0xF0);
  v = exchange(v, swap2(v), 0xCC);
  return exchange(v, swap1(v), 0xAA);
}

// The network's vector operations, as rank_sort_network_body.h takes them.
struct Avx512 {
  using Vec = __m512i;
  static Vec reverse(Vec v) { return kdops::cpu::reverse(v); }
  static Vec min(Vec a, Vec b) { return _mm512_min_epu64(a, b); }
  static Vec max(Vec a, Vec b) { return _mm512_max_epu64(a, b); }
  static Vec sort_vector(Vec v) { return sort8(v); }
  static Vec clean_vector(Vec v) { return clean8(v); }
};

// Loads keys[0..n) into kVecs vectors, the lanes past n holding the largest key (sorted last,
// never stored), sorts and stores the first n.
template <int kVecs>
void sort_row(uint64_t* keys, size_t n) {
  Vec v[kVecs];
  const Vec last = _mm512_set1_epi64(-1);
#pragma GCC unroll 16
  for (int i = 0; i < kVecs; ++i) {
    const size_t rest = n > size_t(8 * i) ? n - 8 * i : 0;
    const __mmask8 m = rest >= 8 ? __mmask8(0xFF) : __mmask8((1u << rest) - 1);
    v[i] = _mm512_mask_loadu_epi64(last, m, keys + 8 * i);
  }
  sort_vectors<Avx512, kVecs>(v);
#pragma GCC unroll 16
  for (int i = 0; i < kVecs; ++i) {
    const size_t rest = n > size_t(8 * i) ? n - 8 * i : 0;
    const __mmask8 m = rest >= 8 ? __mmask8(0xFF) : __mmask8((1u << rest) - 1);
    _mm512_mask_storeu_epi64(keys + 8 * i, m, v[i]);
  }
}

}  // namespace

void sort_rank_keys_network_avx512(uint64_t* keys, size_t n) {
  if (n <= 8) return sort_row<1>(keys, n);
  if (n <= 16) return sort_row<2>(keys, n);
  if (n <= 32) return sort_row<4>(keys, n);
  if (n <= 64) return sort_row<8>(keys, n);
  sort_row<16>(keys, n);
}

}  // namespace kdops::cpu
#endif
