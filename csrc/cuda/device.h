// The host-side calls the CUDA ops make around their launches (device guard, stream, device
// properties), in one place with two implementations: the CUDA runtime through ATen (the nvcc
// build, kdops._C) and the project's CUDA simulator (KDOPS_SIM: the same sources compiled by
// g++ against csrc/sim/cuda_sim.h into kdops._C_sim, where tensors are CPU tensors and a launch
// runs the grid on the calling thread). Included by the ops (csrc/cuda/*_cuda.cpp), never by the
// kernels' .cu files: ATen's CUDA headers are what nvcc would spend its time on.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

#include "cuda/launch_target.h"

#ifdef KDOPS_SIM
// The simulator runs on the CPU: kernels register for CPU tensors under torch.ops.kdops_sim.
#define KDOPS_DEVICE_KEY CPU

namespace kdops::cuda {

// CPU tensors: no current device to switch.
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};

inline Stream current_stream() { return nullptr; }
inline int64_t multiprocessor_count() { return sim::device().multiProcessorCount; }

}  // namespace kdops::cuda
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#define KDOPS_DEVICE_KEY CUDA

namespace kdops::cuda {

using DeviceGuard = c10::cuda::CUDAGuard;

inline Stream current_stream() { return at::cuda::getCurrentCUDAStream(); }
inline int64_t multiprocessor_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

}  // namespace kdops::cuda
#endif

namespace kdops::cuda {

// The current stream and device: where this call's kernels run.
inline LaunchTarget launch_target() { return {current_stream(), multiprocessor_count()}; }

}  // namespace kdops::cuda
