// Sorting rank keys (RankKeyOf in common/plackett_luce.h) on the CPU. Long rows use a stable LSD
// radix sort over the image, 8 bits per pass, skipping passes whose digit every key shares: keys
// enter in index order, so stability keeps ties in index order. Several times faster than
// std::sort for PLD's rows (C = 100..1000), with no comparison branches to mispredict. Short
// float rows go to the AVX-512 or AVX2 sorting network (rank_sort_network.h) where the CPU has one.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/plackett_luce.h"
#include "cpu/cpu_isa.h"
#include "cpu/rank_sort_network.h"

namespace kdops::cpu {

// Below this many keys a comparison sort is cheaper than the radix histograms.
constexpr size_t kRadixMinKeys = 16;

// The ISA of the network that sorts short float rows (generic: none), asked once per task of
// rows (RowScratch), not per row, as cpu_isa() reads the environment.
inline CpuIsa sort_network_isa() {
#ifdef KDOPS_RANK_SORT_NETWORK
  return cpu_isa();
#else
  return CpuIsa::generic;
#endif
}

// Sorts keys ascending, i.e. by descending key value, ties to the lower index. tmp: scratch.
// network: sort_network_isa() of the call. Every path gives the same order (keys are distinct).
template <typename acc_t>
void sort_rank_keys(std::vector<typename RankKeyOf<acc_t>::type>& keys,
                    std::vector<typename RankKeyOf<acc_t>::type>& tmp, CpuIsa network) {
  using K = RankKeyOf<acc_t>;
  const size_t n = keys.size();
#ifdef KDOPS_RANK_SORT_NETWORK
  if constexpr (std::is_same_v<typename K::type, uint64_t>) {
    if (n <= kNetworkMaxKeys && network == CpuIsa::avx512) {
      return sort_rank_keys_network_avx512(keys.data(), n);
    }
    if (n <= kNetworkMaxKeys && network == CpuIsa::avx2) {
      return sort_rank_keys_network_avx2(keys.data(), n);
    }
  }
#endif
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
