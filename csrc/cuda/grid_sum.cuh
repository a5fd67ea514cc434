// Deterministic sums across a whole grid in one launch: each block reduces its values with
// block_sum (block_reduce.cuh), writes its partial, and the last block to finish adds the partials in
// block order. The result depends only on the launch shape, never on scheduling (no float
// atomics), so repeated runs are bit-identical.
#pragma once

#include "cuda/block_reduce.cuh"

namespace kdops::cuda {

// Call from every thread of every block with the block's totals (valid in thread 0, e.g. from
// block_sum): kSums sums and a count. Returns true in exactly one block, the last to arrive,
// whose thread 0 then holds the grid totals in sums and count. partial_sums holds kSums rows of
// gridDim.x. `done` must be zero before the launch, and is zero again after it (the last block's
// atomicInc wraps it), so a counter kept for the next launch on the stream needs no zeroing
// (grid_scratch.h); nullptr for a grid of one block, whose totals are the grid's (no partials, no
// counter: the same bits as the partials' path, which adds zeros to the one partial).
template <int kThreads, int kSums, typename acc_t>
__device__ bool grid_sums(acc_t (&sums)[kSums], long long& count, acc_t* partial_sums, long long* partial_count,
                          unsigned int* done KDOPS_CALLER) {
  if (done == nullptr) return true;
  __shared__ bool is_last;
  if (threadIdx.x == 0) {
    // L2 stores and loads (.cg: L1 is not coherent between SMs) for what other blocks read; the
    // simulator checks them against the PTX memory model (csrc/sim/global_memory.h).
#pragma unroll
    for (int k = 0; k < kSums; ++k) __stcg(partial_sums + k * gridDim.x + blockIdx.x, sums[k] KDOPS_SITE);
    __stcg(partial_count + blockIdx.x, count KDOPS_SITE);
    __threadfence();  // release: the partial is visible before the block is counted
    const bool last = atomicInc(done, gridDim.x - 1) == gridDim.x - 1;  // the last wraps it to 0
    // acquire: the other blocks' partials, counted before this block, are visible to it. Without
    // this fence the reads below may see partials the counter says are there, but not yet
    // their values (PTX memory model: a fence after the atomic makes an acquire pattern).
    if (last) __threadfence();
    is_last = last;
  }
  __syncthreads(KDOPS_SITE_ONLY);
  if (!is_last) return false;
  acc_t s[kSums] = {};
  long long c = 0;
  for (unsigned int i = threadIdx.x; i < gridDim.x; i += kThreads) {
#pragma unroll
    for (int k = 0; k < kSums; ++k) s[k] += __ldcg(partial_sums + k * gridDim.x + i KDOPS_SITE);
    c += __ldcg(partial_count + i KDOPS_SITE);
  }
#pragma unroll
  for (int k = 0; k < kSums; ++k) sums[k] = block_sum<kThreads>(s[k] KDOPS_FORWARD_CALLER);
  count = block_sum<kThreads>(c KDOPS_FORWARD_CALLER);
  return true;
}

// grid_sums of one sum.
template <int kThreads, typename acc_t>
__device__ bool grid_sum(acc_t& sum, long long& count, acc_t* partial_sum, long long* partial_count,
                         unsigned int* done KDOPS_CALLER) {
  acc_t sums[1] = {sum};
  const bool last = grid_sums<kThreads, 1>(sums, count, partial_sum, partial_count, done KDOPS_FORWARD_CALLER);
  sum = sums[0];
  return last;
}

}  // namespace kdops::cuda
