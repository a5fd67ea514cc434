// Block-wide reduction, the project's own rather than cub::BlockReduce. Why: the CUDA simulator
// that runs these kernels in CI cannot execute CUB's internals (inline PTX, architecture
// dispatch), and one implementation that CI actually executes beats a GPU-only one nobody
// has run. The combination order is fixed by the block size alone (a shuffle tree in each warp,
// warp_reduce of warp_scan.cuh, then the warp totals in warp order), so results are
// bit-identical from run to run whatever the schedule.
#pragma once

#include "cuda/warp_scan.cuh"

namespace kdops::cuda {

struct SumOp {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const { return a + b; }
};

// op over v of the block's kThreads threads (all must call), the result in every thread.
// op must be associative up to rounding; it need not be commutative (left operand = lower
// threads).
template <int kThreads, typename T, typename Op>
__device__ T block_all_reduce(T v, Op op KDOPS_CALLER) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "kThreads: whole warps, at most 1024");
  constexpr int kWarps = kThreads / 32;
  alignas(T) __shared__ unsigned char partial_bytes[kWarps * sizeof(T)];  // raw: T may have a constructor
  T* partial = reinterpret_cast<T*>(partial_bytes);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v, op KDOPS_FORWARD_CALLER);  // lanes 0..31 combined in lane 0
  if (lane == 0) partial[warp] = v;
  __syncthreads(KDOPS_SITE_ONLY);
  T total = partial[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) total = op(total, partial[w]);
  __syncthreads(KDOPS_SITE_ONLY);  // partial is reused by the next call
  return total;
}

template <int kThreads, typename T>
__device__ T block_sum(T v KDOPS_CALLER) {
  return block_all_reduce<kThreads>(v, SumOp() KDOPS_FORWARD_CALLER);
}

}  // namespace kdops::cuda
