// Warp-wide reductions and scans: of one value a lane (warp_reduce, warp_scan_lanes, which the
// block-wide ones of block_reduce.cuh and block_scan.cuh also build on), and of a row held in one
// warp's registers in the blocked layout of warp_sort.cuh: lane l holds positions
// l * kItems .. l * kItems + kItems - 1. The combination order is fixed (in-lane in position
// order, then a shuffle tree or scan across lanes), so a result is bit-identical from run to run
// whatever the schedule. op must be associative up to rounding; it need not be commutative: its
// left operand always holds the lower positions (lanes). Every lane of the warp must call.
#pragma once

#include "cuda/warp_shuffle.cuh"

namespace kdops::cuda {

// op over v of the warp's 32 lanes, lane order, the result in lane 0 from a fixed tree (the
// other lanes end with partial combinations).
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op KDOPS_CALLER) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const T upper = shfl_down(v, offset KDOPS_FORWARD_CALLER);
    if (lane + offset < kWarpSize) v = op(v, upper);
  }
  return v;
}

// op over v of the warp's 32 lanes, lane order, the result in every lane.
template <typename T, typename Op>
__device__ __forceinline__ T warp_all_reduce(T v, Op op KDOPS_CALLER) {
  return shfl_from(warp_reduce(v, op KDOPS_FORWARD_CALLER), 0 KDOPS_FORWARD_CALLER);
}

// v of the lanes 0..lane combined, lane order (an inclusive scan across lanes).
template <typename T, typename Op>
__device__ __forceinline__ T warp_scan_lanes(T v, Op op KDOPS_CALLER) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset *= 2) {
    const T lower = shfl_up(v, offset KDOPS_FORWARD_CALLER);
    if (lane >= offset) v = op(lower, v);
  }
  return v;
}

// v[t] becomes v_0 . v_1 . ... . v_p, p = the position of v[t] (an inclusive prefix scan).
template <int kItems, typename T, typename Op>
__device__ __forceinline__ void warp_inclusive_scan(T (&v)[kItems], Op op KDOPS_CALLER) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int t = 1; t < kItems; ++t) v[t] = op(v[t - 1], v[t]);
  const T lanes = warp_scan_lanes(v[kItems - 1], op KDOPS_FORWARD_CALLER);  // the lanes 0..lane combined
  const T before = shfl_up(lanes, 1 KDOPS_FORWARD_CALLER);  // lanes 0..lane-1 combined (lane 0: nothing)
  if (lane > 0) {
#pragma unroll
    for (int t = 0; t < kItems; ++t) v[t] = op(before, v[t]);
  }
}

// v[t] becomes v_p . v_{p+1} . ... . v_last (an inclusive suffix scan).
template <int kItems, typename T, typename Op>
__device__ __forceinline__ void warp_suffix_scan(T (&v)[kItems], Op op KDOPS_CALLER) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int t = kItems - 2; t >= 0; --t) v[t] = op(v[t], v[t + 1]);
  T lanes = v[0];  // becomes the lanes lane..31 combined
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset *= 2) {
    const T upper = shfl_down(lanes, offset KDOPS_FORWARD_CALLER);
    if (lane + offset < kWarpSize) lanes = op(lanes, upper);
  }
  const T after = shfl_down(lanes, 1 KDOPS_FORWARD_CALLER);  // lanes lane+1..31 combined (lane 31: nothing)
  if (lane + 1 < kWarpSize) {
#pragma unroll
    for (int t = 0; t < kItems; ++t) v[t] = op(v[t], after);
  }
}

}  // namespace kdops::cuda
