// <cuda_pipeline.h> for the simulator: CUDA's pipeline primitives (cp.async on sm_80+) over
// csrc/sim/async_copy.h. Each copy is deferred until the __pipeline_wait_prior of its thread
// that covers its batch, and poisons its destination until then (see async_copy.h).
#pragma once

#if !defined(KDOPS_SIM)
#error "csrc/sim/include is for the simulator build only (-DKDOPS_SIM -include csrc/sim/cuda_sim.h)"
#endif

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

// Copies size_and_align (4, 8 or 16) bytes from global src to shared dst, both aligned to it,
// the last zfill of them as zeros (src is not read for those).
// file, line: the call's site, for the access recorder (access_record.h).
inline void __pipeline_memcpy_async(void* __restrict__ dst_shared, const void* __restrict__ src_global,
                                    size_t size_and_align, size_t zfill = 0, const char* file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
  const size_t size = size_and_align;
  if (size != 4 && size != 8 && size != 16) {
    throw std::invalid_argument("__pipeline_memcpy_async: size_and_align must be 4, 8 or 16, got " +
                                std::to_string(size));
  }
  if (zfill > size) throw std::invalid_argument("__pipeline_memcpy_async: zfill exceeds size_and_align");
  if (reinterpret_cast<uintptr_t>(dst_shared) % size != 0 || reinterpret_cast<uintptr_t>(src_global) % size != 0) {
    throw std::invalid_argument("__pipeline_memcpy_async: dst and src must be aligned to size_and_align = " +
                                std::to_string(size));
  }
  KDOPS_SIM_RECORD_ACCESS(kCpAsync, dst_shared, size, file, line);
  KDOPS_SIM_RECORD_ACCESS(kCpAsync, src_global, size - zfill, file, line);
  kdops::sim::detail::current().async_copies.issue(dst_shared, src_global, size, zfill);
}

// Closes the thread's current batch of copies.
inline void __pipeline_commit() { ++kdops::sim::detail::current().async_copies.committed; }

// Waits until at most `prior` of the thread's committed batches are still in flight: lands the
// older ones.
inline void __pipeline_wait_prior(size_t prior) {
  auto& copies = kdops::sim::detail::current().async_copies;
  if (copies.committed > prior) copies.land_before(copies.committed - prior);
}
