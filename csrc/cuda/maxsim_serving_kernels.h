// Launchers of the serving MaxSim kernels (maxsim_serving_kernels.cu), called by the ops in
// maxsim_quantized_cuda.cpp. Pointers are device memory.
#pragma once

#include <cstdint>

#include "common/maxsim.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::maxsim_serving {

// int8 queries and docs on integer tensor cores (maxsim_int8_mma.cuh): scores [Nq, K] float32
// (argmax [Nq, K, Lq] when kWriteArgmax), q_scale [Nq, Lq], d_scale one per doc token row. Any d:
// feature chunks when d is too wide for shared memory (checked: the device must hold one chunk).
template <bool kWriteArgmax>
void int8_forward(const MaxSimView<int8_t>& v, const float* q_scale, const float* d_scale, float* scores,
                  int32_t* argmax, LaunchTarget on);

}  // namespace kdops::cuda::maxsim_serving
