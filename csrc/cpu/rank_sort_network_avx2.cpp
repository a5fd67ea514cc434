// The AVX2 sorting network of rank_sort_network.h: 4 keys a vector, its merge stages in
// rank_sort_network_body.h. AVX2 has no unsigned 64-bit compare: keys are loaded with their top
// bit flipped, so that the signed compare orders them as unsigned, and flipped back when stored.
// AVX2 has no lane masks either: a compare-exchange takes the min and the max by a blend on the
// compare, and lanes pick one of the two by an immediate blend.
#include "cpu/rank_sort_network.h"

#ifdef KDOPS_RANK_SORT_NETWORK

#pragma GCC target("avx2")
#include <immintrin.h>

#include "cpu/rank_sort_network_body.h"

namespace kdops::cpu {
namespace {

using Vec = __m256i;  // 4 keys

// Lane permutations, lane i taking lane p(i).
Vec swap1(Vec v) { return _mm256_shuffle_epi32(v, 0x4E); }        // 1 0 3 2
Vec swap2(Vec v) { return _mm256_permute4x64_epi64(v, 0x4E); }    // 2 3 0 1
Vec reverse(Vec v) { return _mm256_permute4x64_epi64(v, 0x1B); }  // 3 2 1 0

Vec vmin(Vec a, Vec b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b)); }
Vec vmax(Vec a, Vec b) { return _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(a, b)); }

// Immediate blend masks (two bits per 64-bit lane) of the higher lane of each pair.
constexpr int kOdd = 0xCC;   // lanes 1, 3
constexpr int kHigh = 0xF0;  // lanes 2, 3

// Compare-exchange of each lane with its partner p: the lanes of kUpper keep the larger key.
template <int kUpper>
Vec exchange(Vec v, Vec p) {
  const Vec gt = _mm256_cmpgt_epi64(v, p);
  return _mm256_blend_epi32(_mm256_blendv_epi8(v, p, gt), _mm256_blendv_epi8(p, v, gt), kUpper);
}

// Sorts one vector: runs of 1 -> 2 -> 4 keys, each merge a flip then half-cleaners.
Vec sort4(Vec v) {
  v = exchange<kOdd>(v, swap1(v));
  v = exchange<kHigh>(v, reverse(v));
  return exchange<kOdd>(v, swap1(v));
}

// Sorts a bitonic vector: the half-cleaners of distance 2, 1.
Vec clean4(Vec v) {
  v = exchange<kHigh>(v, swap2(v));
  return exchange<kOdd>(v, swap1(v));
}

// The network's vector operations, as rank_sort_network_body.h takes them.
struct Avx2 {
  using Vec = __m256i;
  static Vec reverse(Vec v) { return kdops::cpu::reverse(v); }
  static Vec min(Vec a, Vec b) { return vmin(a, b); }
  static Vec max(Vec a, Vec b) { return vmax(a, b); }
  static Vec sort_vector(Vec v) { return sort4(v); }
  static Vec clean_vector(Vec v) { return clean4(v); }
};

// The lanes of vector i that hold keys of a row of n (all ones where present).
Vec present(size_t n, int i) {
  const long long rest = n > size_t(4 * i) ? static_cast<long long>(n - 4 * i) : 0;
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(rest), _mm256_setr_epi64x(0, 1, 2, 3));
}

// Loads keys[0..n) into kVecs vectors, top bit flipped, the lanes past n holding the largest key
// (sorted last, never stored), sorts and stores the first n.
template <int kVecs>
void sort_row(uint64_t* keys, size_t n) {
  const Vec flip = _mm256_set1_epi64x(static_cast<long long>(1ull << 63));
  const Vec last = _mm256_set1_epi64x(static_cast<long long>(~0ull >> 1));  // ~0 flipped
  auto* at = reinterpret_cast<long long*>(keys);
  Vec v[kVecs];
#pragma GCC unroll 16
  for (int i = 0; i < kVecs; ++i) {
    const Vec m = present(n, i);
    v[i] = _mm256_blendv_epi8(last, _mm256_xor_si256(_mm256_maskload_epi64(at + 4 * i, m), flip), m);
  }
  sort_vectors<Avx2, kVecs>(v);
#pragma GCC unroll 16
  for (int i = 0; i < kVecs; ++i) {
    if (n >= size_t(4 * i + 4)) {
      _mm256_storeu_si256(reinterpret_cast<Vec*>(at + 4 * i), _mm256_xor_si256(v[i], flip));
    } else {
      _mm256_maskstore_epi64(at + 4 * i, present(n, i), _mm256_xor_si256(v[i], flip));
    }
  }
}

}  // namespace

void sort_rank_keys_network_avx2(uint64_t* keys, size_t n) {
  if (n <= 4) return sort_row<1>(keys, n);
  if (n <= 8) return sort_row<2>(keys, n);
  if (n <= 16) return sort_row<4>(keys, n);
  if (n <= 32) return sort_row<8>(keys, n);
  if (n <= 64) return sort_row<16>(keys, n);
  sort_row<32>(keys, n);
}

}  // namespace kdops::cpu
#endif
