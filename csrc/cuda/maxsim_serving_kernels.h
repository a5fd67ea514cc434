// Launcher of the serving MaxSim kernel (maxsim_serving_kernels.cu), called by the op in
// maxsim_quantized_cuda.cpp. Pointers are device memory.
#pragma once

#include <cstdint>

#include "common/maxsim.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::maxsim_serving {

// How a side's token elements are stored: int8, float8_e4m3fn bits, or float32.
enum class Format : int { kInt8, kE4m3, kFloat };

KDOPS_HD int element_bytes(Format f) { return f == Format::kFloat ? 4 : 1; }

// maxsim_quantized's forward on tensor cores (maxsim_serving_mma.cuh): scores [Nq, K] float32
// (argmax [Nq, K, Lq] when kWriteArgmax). v.Q / v.D: rows of d elements in q_format / d_format;
// q_scale [Nq, Lq] (nullptr for a float32 Q), d_scale one per doc token row. int8 x int8: exact
// int32 sums; any other pairing: tokens decoded to fp16, fp32 sums. Any d: feature chunks when d
// is too wide for shared memory (checked: the device must hold one chunk).
template <bool kWriteArgmax>
void quantized_forward(const MaxSimView<char>& v, Format q_format, const float* q_scale, Format d_format,
                       const float* d_scale, float* scores, int32_t* argmax, LaunchTarget on);

}  // namespace kdops::cuda::maxsim_serving
