// Whether any thread of a grid found something (a value check's failure), known in the same
// launch: each block combines its threads' findings with one barrier, counts itself in words[1]
// if it found any, and the last block to arrive (words[0], grid_sum.cuh's arrives_last) writes
// the grid's answer and puts words[1] back to zero. The kernel then reports a bad input through a
// flag the op asserts on the device (no host read, no second pass over the input).
#pragma once

#include "cuda/grid_sum.cuh"
#include "sim/portable.h"

namespace kdops::cuda {

// Call from every thread of every block, after its last use of `found`. words: two words that are
// zero before the launch and zero again after it (grid_scratch.h's stream words: GridWords), or
// nullptr for a grid of one block. *none = no thread of the grid found anything.
__device__ inline void grid_none(bool found, unsigned int* words, bool* none KDOPS_CALLER) {
  const bool block_found = __syncthreads_or(found KDOPS_SITE) != 0;
  if (threadIdx.x != 0) return;
  if (words == nullptr) {
    *none = !block_found;
    return;
  }
  if (block_found) atomicAdd(words + 1, 1u);
  if (arrives_last(words)) *none = atomicExch(words + 1, 0u) == 0;  // every block's count is in
}

}  // namespace kdops::cuda
