// cp.async for the simulator (part of cuda_sim.h; the API is csrc/sim/include/cuda_pipeline.h):
// the copies a CUDA thread issued with __pipeline_memcpy_async and has not waited for. A copy
// lands only when a __pipeline_wait_prior of its thread covers its batch (or when the thread
// exits), and issuing it poisons its destination (0xFF bytes: NaN in every float type, -1 in
// every integer), so a read before the wait, or a copy into a buffer other threads still read,
// gives wrong results here instead of a race that the hardware usually wins.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kdops::sim::detail {

struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes;  // copied from src; then zfill bytes of zeros up to the copy's size
  size_t zfill;
  size_t batch;  // the commit that closes it: batches are numbered 0, 1, ... per thread
};

struct AsyncCopies {
  std::vector<AsyncCopy> pending;  // in issue order
  size_t committed = 0;            // batches committed so far (= the open batch's number)

  void issue(void* dst, const void* src, size_t size, size_t zfill) {
    std::memset(dst, 0xFF, size);
    pending.push_back({dst, src, size - zfill, zfill, committed});
  }
  // Lands, in issue order, every pending copy of the batches before `end`.
  void land_before(size_t end) {
    size_t kept = 0;
    for (const AsyncCopy& c : pending) {
      if (c.batch < end) {
        std::memcpy(c.dst, c.src, c.bytes);
        std::memset(static_cast<char*>(c.dst) + c.bytes, 0, c.zfill);
      } else {
        pending[kept++] = c;
      }
    }
    pending.resize(kept);
  }
  void land_all() { land_before(SIZE_MAX); }
  void reset() {
    pending.clear();
    committed = 0;
  }
};

}  // namespace kdops::sim::detail
