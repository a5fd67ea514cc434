// Where the kernels of one op call run: the stream, and the device's SM count that sizes
// grid-stride grids. The ops (host code, csrc/cuda/*_cuda.cpp) fill it in (device.h:
// launch_target()) and hand it to the kernels' launchers (csrc/cuda/*_kernels.cu), which include
// only CUDA and c10 headers, not ATen: nvcc's front ends then parse no ATen per arch.
#pragma once

#include <cstdint>

#ifndef KDOPS_SIM
#include <cuda_runtime_api.h>
#endif

namespace kdops::cuda {

using Stream = cudaStream_t;

struct LaunchTarget {
  Stream stream;
  int64_t sms;  // multiprocessors of the device
};

}  // namespace kdops::cuda
