// The host-side calls the CUDA kernels' launch code makes besides launching (device guard,
// stream, device properties, function attributes, error checks), in one place with two
// implementations: the CUDA runtime (the nvcc build, kdops._C) and the project's CUDA simulator
// (KDOPS_SIM: the same .cu files compiled by g++ against csrc/sim/cuda_sim.h into kdops._C_sim,
// where tensors are CPU tensors and a launch runs the grid on the calling thread).
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <cstdint>

#ifdef KDOPS_SIM
// The simulator runs on the CPU: kernels register for CPU tensors under torch.ops.kdops_sim.
#define KDOPS_DEVICE_KEY CPU

namespace kdops::cuda {

using Stream = cudaStream_t;

// CPU tensors: no current device to switch.
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};

inline Stream current_stream() { return nullptr; }
inline int64_t multiprocessor_count() { return sim::device().multiProcessorCount; }
inline int64_t shared_memory_optin() { return sim::device().sharedMemPerBlockOptin; }

}  // namespace kdops::cuda
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#define KDOPS_DEVICE_KEY CUDA

namespace kdops::cuda {

using Stream = cudaStream_t;
using DeviceGuard = c10::cuda::CUDAGuard;

inline Stream current_stream() { return at::cuda::getCurrentCUDAStream(); }
inline int64_t multiprocessor_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}
inline int64_t shared_memory_optin() {
  return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
}

}  // namespace kdops::cuda
#endif

namespace kdops::cuda {

// A CUDA runtime call's error as a RuntimeError naming the call (both builds: the simulator
// provides cudaError_t and cudaGetErrorString).
inline void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

// Lets `kernel` use up to `bytes` of dynamic shared memory (above the default 48 KiB).
template <typename Kernel>
void set_max_dynamic_shared_memory(Kernel kernel, int64_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

}  // namespace kdops::cuda
