// A parallel sum whose result does not depend on the number of threads: the range is cut into
// fixed-size chunks, each chunk is summed in order, then the chunk sums are added in order.
// at::parallel_reduce splits by thread count, so its float sums change with OMP_NUM_THREADS.
#pragma once

#include <ATen/Parallel.h>

#include "cpu/parallel_grain.h"

#include <vector>

namespace kdops::cpu {

constexpr int64_t kSumChunk = 2048;

// chunk_sum(begin, end) -> Acc sums the items [begin, end) in order; Acc supports += and Acc{}.
// item_ns: an item's estimated cost, which sets how many chunks a parallel task takes
// (parallel_grain: small sums run on the calling thread alone).
template <typename Acc, typename ChunkSum>
Acc deterministic_sum(int64_t n, double item_ns, const ChunkSum& chunk_sum) {
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<Acc> partial(chunks);
  at::parallel_for(0, chunks, parallel_grain(item_ns * kSumChunk), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      partial[c] = chunk_sum(c * kSumChunk, std::min(n, (c + 1) * kSumChunk));
    }
  });
  Acc total{};
  for (const Acc& p : partial) total += p;
  return total;
}

}  // namespace kdops::cpu
