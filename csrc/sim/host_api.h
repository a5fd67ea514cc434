// The few CUDA runtime host calls the kernels' launch code needs (part of cuda_sim.h).
#pragma once

#include <cstddef>

using cudaStream_t = struct CUstream_st*;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

// Launch errors are exceptions from kdops::sim::launch, so only cudaFuncSetAttribute sets an error.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

// Raises the dynamic shared memory `func`'s launches may use, up to the simulated device's opt-in
// limit (cudaErrorInvalidValue above it).
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attribute, int value);
template <typename T>
cudaError_t cudaFuncSetAttribute(T* func, cudaFuncAttribute attribute, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attribute, value);
}
