// The dynamic shared memory a kernel may launch with on the current device, raised once per
// (kernel, device).
#pragma once

#include <cstdint>
#include <mutex>

#include "cuda/device.h"

#ifndef KDOPS_SIM
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace kdops::cuda {

// The kernel's static shared memory (its __shared__ variables): the opt-in limit covers both kinds.
template <typename Kernel>
int64_t static_shared_memory(Kernel kernel) {
#ifdef KDOPS_SIM
  (void)kernel;
  return 0;  // the simulator does not track static shared memory against the limit
#else
  cudaFuncAttributes attributes;
  check(cudaFuncGetAttributes(&attributes, kernel), "cudaFuncGetAttributes");
  return static_cast<int64_t>(attributes.sharedSizeBytes);
#endif
}

inline int current_device_index() {
#ifdef KDOPS_SIM
  return 0;
#else
  return c10::cuda::current_device();
#endif
}

// The opt-in maximum less Kernel's static shared memory. The first call per device raises the
// kernel's MaxDynamicSharedMemorySize to it; later calls only read. (The attribute is
// process-wide: setting it per call to that call's size lets two host threads with different
// sizes break each other's launches.)
template <auto Kernel>
int64_t dynamic_shared_memory_limit() {
#ifdef KDOPS_SIM
  // The simulator's tests switch device presets at run time (one device index, two limits):
  // computed per call there. Launches run on the calling thread, so nothing can race.
  const int64_t limit = shared_memory_optin() - static_shared_memory(Kernel);
  set_max_dynamic_shared_memory(Kernel, limit);
  return limit;
#else
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static int64_t limit[kMaxDevices];
  const int device = current_device_index();
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "kdops supports CUDA devices 0..", kMaxDevices - 1,
              ", got device ", device);
  std::call_once(once[device], [device] {
    limit[device] = shared_memory_optin() - static_shared_memory(Kernel);
    set_max_dynamic_shared_memory(Kernel, limit[device]);
  });
  return limit[device];
#endif
}

}  // namespace kdops::cuda
