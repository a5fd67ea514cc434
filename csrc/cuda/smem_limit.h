// The dynamic shared memory a kernel may launch with on the current device, raised once per
// (kernel, device). Kernel-side (the kernels' .cu files): it takes the kernel's address.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <mutex>

#include "cuda/launch.cuh"

namespace kdops::cuda {

// Lets `kernel` use up to `bytes` of dynamic shared memory (above the default 48 KiB).
template <typename Kernel>
void set_max_dynamic_shared_memory(Kernel kernel, int64_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

#ifdef KDOPS_SIM
// The simulator's tests switch device presets at run time (one device index, two limits):
// computed per call there. Launches run on the calling thread, so nothing can race. The
// simulator does not track static shared memory against the limit.
template <auto Kernel>
int64_t dynamic_shared_memory_limit() {
  const int64_t limit = sim::device().sharedMemPerBlockOptin;
  set_max_dynamic_shared_memory(Kernel, limit);
  return limit;
}
#else
// The opt-in maximum less Kernel's static shared memory (its __shared__ variables: the opt-in
// limit covers both kinds). The first call per device raises the kernel's
// MaxDynamicSharedMemorySize to it; later calls only read. (The attribute is process-wide:
// setting it per call to that call's size lets two host threads with different sizes break each
// other's launches.)
template <auto Kernel>
int64_t dynamic_shared_memory_limit() {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static int64_t limit[kMaxDevices];
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "kdops supports CUDA devices 0..", kMaxDevices - 1,
              ", got device ", device);
  std::call_once(once[device], [device] {
    int optin = 0;
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    cudaFuncAttributes attributes;
    check(cudaFuncGetAttributes(&attributes, Kernel), "cudaFuncGetAttributes");
    limit[device] = int64_t(optin) - static_cast<int64_t>(attributes.sharedSizeBytes);
    set_max_dynamic_shared_memory(Kernel, limit[device]);
  });
  return limit[device];
}
#endif

}  // namespace kdops::cuda
