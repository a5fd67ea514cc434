// Bitonic sort of 32 * kItems keys held in one warp's registers, ascending by operator<. Lane l
// holds elements l * kItems .. l * kItems + kItems - 1 (a blocked layout), so the network's
// distances below kItems are compare-exchanges inside a lane and the longer ones a shfl_xor
// between lanes at the same register. Every loop has compile-time bounds and is unrolled, so the
// register array is only indexed by constants (no local memory). Every lane of the warp must call
// it. The keys must be distinct (the rank keys carry their index): the sorted order is then
// unique, the same as any other sort's, whatever the schedule.
#pragma once

#include "cuda/warp_shuffle.cuh"

namespace kdops::cuda {

template <int kItems, typename key_t>
__device__ __forceinline__ void warp_bitonic_sort(key_t (&v)[kItems] KDOPS_CALLER) {
  static_assert(kItems > 0 && (kItems & (kItems - 1)) == 0, "items per lane: a power of two");
  constexpr int kSize = kWarpSize * kItems;
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int k = 2; k <= kSize; k <<= 1) {
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1) {
      if (j >= kItems) {  // across lanes: element i pairs with i ^ j, in lane ^ (j / kItems)
#pragma unroll
        for (int t = 0; t < kItems; ++t) {
          const int i = lane * kItems + t;
          const key_t other = shfl_xor(v[t], j / kItems KDOPS_FORWARD_CALLER);
          const bool lower = (i & j) == 0, ascending = (i & k) == 0;
          const bool take_min = lower == ascending;
          const bool other_less = other < v[t];
          if (take_min == other_less) v[t] = other;
        }
      } else {  // inside the lane: registers t and t ^ j
#pragma unroll
        for (int t = 0; t < kItems; ++t) {
          if ((t & j) != 0) continue;
          const int i = lane * kItems + t;
          const bool ascending = (i & k) == 0;
          const key_t lo = v[t], hi = v[t ^ j];
          if (ascending ? hi < lo : lo < hi) {
            v[t] = hi;
            v[t ^ j] = lo;
          }
        }
      }
    }
  }
}

}  // namespace kdops::cuda
