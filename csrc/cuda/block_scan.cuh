// Block-wide inclusive scan carried across tiles, the project's own rather than cub::BlockScan
// with a prefix callback (why: see block_reduce.cuh). Fixed combination order: a shuffle scan in
// each warp (warp_scan_lanes of warp_scan.cuh), then the carry and the totals of the lower warps
// in warp order.
#pragma once

#include "cuda/warp_scan.cuh"

namespace kdops::cuda {

// Inclusive scan in thread order of the block's kThreads values (all threads must call), seeded
// on the left with `carry`: returns carry . v_0 . ... . v_tid, and sets carry (in every thread)
// to carry . v_0 . ... . v_last, ready for the next tile. op must be associative up to rounding;
// it need not be commutative (the left operand always holds the lower positions).
template <int kThreads, typename T, typename Op>
__device__ T block_inclusive_scan(T v, Op op, T& carry KDOPS_CALLER) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "kThreads: whole warps, at most 1024");
  constexpr int kWarps = kThreads / 32;
  alignas(T) __shared__ unsigned char total_bytes[kWarps * sizeof(T)];  // raw: T may have a constructor
  T* warp_total = reinterpret_cast<T*>(total_bytes);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_scan_lanes(v, op KDOPS_FORWARD_CALLER);  // this warp's lanes 0..lane combined
  if (lane == 31) warp_total[warp] = v;
  __syncthreads(KDOPS_SITE_ONLY);
  T before = carry;  // carry and the warps below this one
  for (int w = 0; w < kWarps; ++w) {
    if (w == warp) v = op(before, v);
    before = op(before, warp_total[w]);
  }
  carry = before;
  __syncthreads(KDOPS_SITE_ONLY);  // warp_total is reused by the next call
  return v;
}

}  // namespace kdops::cuda
