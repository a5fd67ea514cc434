// Kernel launches, and the launch-shape helpers shared by the CUDA kernels. Every launch goes
// through launch() instead of <<<>>> (the one piece of CUDA syntax g++ cannot parse), so the
// same source also builds and runs on the simulator (csrc/sim).
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cuda/launch_target.h"

#ifndef KDOPS_SIM
#include <c10/cuda/CUDAException.h>
#endif

namespace kdops::cuda {

// kernel<<<grid, block, dynamic_smem, stream>>>(args...), then the launch check. On the
// simulator the grid runs to completion before launch returns, and errors (barrier divergence,
// bad shuffles, ...) are thrown as RuntimeErrors naming block, thread and source line.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_smem, Stream stream,
            Args&&... args) {
#ifdef KDOPS_SIM
  sim::launch(kernel, grid, block, dynamic_smem, stream, std::forward<Args>(args)...);
#else
  kernel<<<grid, block, dynamic_smem, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

// Blocks for a grid-stride loop over n items: enough to fill the device, no more.
inline int grid_size(int64_t n, int threads, int64_t sms) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, sms * 4)));
}

// A CUDA runtime call's error as a RuntimeError naming the call (both builds: the simulator
// provides cudaError_t and cudaGetErrorString).
inline void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

}  // namespace kdops::cuda

// The (scalar_t, acc_t) pairs the kernels are built for: those of
// AT_DISPATCH_FLOATING_TYPES_AND2(kHalf, kBFloat16, ...) with acc_t = at::opmath_type<scalar_t>,
// the ops' dispatch. Each *_kernels.cu instantiates its launchers with X(scalar_t, acc_t).
#define KDOPS_FOR_FLOATING_TYPES(X) \
  X(double, double)                 \
  X(float, float)                   \
  X(c10::Half, float)               \
  X(c10::BFloat16, float)
