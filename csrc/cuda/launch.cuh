// Launch-shape helpers shared by the CUDA kernels.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

namespace kdops::cuda {

// Blocks for a grid-stride loop over n items: enough to fill the device, no more.
inline int grid_size(int64_t n, int threads) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, sms * 4)));
}

}  // namespace kdops::cuda
