// Sorting rank keys on the CPU. A float key's 32-bit image and its index pack into one uint64
// (image high, index low), so a comparison is one integer compare and a move is 8 bytes; a
// double key keeps the (image, index) pair of common/plackett_luce.h. Long rows use a stable LSD
// radix sort over the image, 8 bits per pass, skipping passes whose digit every key shares: keys
// enter in index order, so stability keeps ties in index order. Several times faster than
// std::sort for PLD's rows (C = 100..1000), with no comparison branches to mispredict.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "common/plackett_luce.h"

namespace kdops::cpu {

template <typename acc_t>
struct CpuRankKey;

template <>
struct CpuRankKey<float> {
  using type = uint64_t;
  static constexpr int kImageBytes = 4;
  static type make(float x, int64_t i) { return uint64_t(rank_image(x)) << 32 | uint64_t(i); }
  static int64_t index(type k) { return static_cast<int64_t>(k & 0xffffffffu); }
  static unsigned digit(type k, int p) { return (k >> (32 + 8 * p)) & 0xff; }
};

template <>
struct CpuRankKey<double> {
  using type = RankKey<uint64_t>;
  static constexpr int kImageBytes = 8;
  static type make(double x, int64_t i) { return {rank_image(x), i}; }
  static int64_t index(const type& k) { return k.index; }
  static unsigned digit(const type& k, int p) { return (k.image >> (8 * p)) & 0xff; }
};

// Below this many keys a comparison sort is cheaper than the radix histograms.
constexpr size_t kRadixMinKeys = 96;

// Sorts keys ascending, i.e. by descending key value, ties to the lower index. tmp: scratch.
template <typename acc_t>
void sort_rank_keys(std::vector<typename CpuRankKey<acc_t>::type>& keys,
                    std::vector<typename CpuRankKey<acc_t>::type>& tmp) {
  using K = CpuRankKey<acc_t>;
  const size_t n = keys.size();
  if (n < kRadixMinKeys) {
    std::sort(keys.begin(), keys.end());
    return;
  }
  std::array<std::array<uint32_t, 256>, K::kImageBytes> counts{};
  for (const auto& k : keys) {
    for (int p = 0; p < K::kImageBytes; ++p) ++counts[p][K::digit(k, p)];
  }
  tmp.resize(n);
  auto* src = keys.data();
  auto* dst = tmp.data();
  for (int p = 0; p < K::kImageBytes; ++p) {
    auto& count = counts[p];
    if (count[K::digit(src[0], p)] == n) continue;  // one digit: nothing moves
    uint32_t offset = 0;
    for (auto& c : count) {
      const uint32_t here = c;
      c = offset;
      offset += here;
    }
    for (size_t i = 0; i < n; ++i) dst[count[K::digit(src[i], p)]++] = src[i];
    std::swap(src, dst);
  }
  if (src != keys.data()) std::copy(src, src + n, keys.data());
}

}  // namespace kdops::cpu
