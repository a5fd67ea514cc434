// Deterministic sums across a whole grid in one launch: each block reduces its values with
// block_sum (block_reduce.cuh), writes its partial, and the last block to finish adds the partials in
// block order. The result depends only on the launch shape, never on scheduling (no float
// atomics), so repeated runs are bit-identical.
#pragma once

#include "cuda/block_reduce.cuh"

namespace kdops::cuda {

// The last-block arrival of a grid that combines its blocks' results in one launch: counts the
// calling block in `done` and returns true in exactly one block, the last one counted. Call it
// from one thread per block (thread 0 in grid_sums and grid_none), once per launch, after that
// thread's stores of what the last block reads (other threads' stores: after a barrier). `done`
// is zero before the launch and again after it (atomicInc wraps at gridDim.x - 1), so a counter
// kept for the next launch on the stream needs no zeroing (grid_scratch.h).
// Ordering, under the PTX memory model, where the atomic alone is relaxed: a fence before it
// makes a release pattern (the caller's stores are visible to whoever observes its count), a
// fence after it an acquire pattern (the last block's later loads see what every other block
// released before its own, earlier increment: the increments of `done` are totally ordered).
// Only the last block reads, so only it takes the second fence. Without the first a block can be
// counted before its stores are visible; without the second the last block can see the count
// but not yet the values. The simulator checks both (csrc/sim/global_memory.h).
__device__ inline bool arrives_last(unsigned int* done) {
  __threadfence();  // release: the caller's stores are visible before the block is counted
  const bool last = atomicInc(done, gridDim.x - 1) == gridDim.x - 1;  // the last wraps it to 0
  if (last) __threadfence();  // acquire: what the earlier blocks released is visible to the last
  return last;
}

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
    is_last = arrives_last(done);  // the last block sees every partial
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
