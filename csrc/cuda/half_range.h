// The serving kernels round a float32 query to fp16 for the tensor cores (maxsim_serving_mma.cuh):
// finite values past fp16's largest (65504) would become infinities, so the ops refuse them.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "common/checks.h"

namespace kdops::cuda {

// On the device, without a sync (assert_on_device, as the other value checks); on the host for
// host tensors. Infinities and NaN are fp16 values and pass.
inline void check_half_range(const at::Tensor& Q) {
  const at::Tensor valid = Q.abs().le(65504).logical_or_(Q.isfinite().logical_not_()).all();
  const std::string message = "Q (float32) must hold values within fp16's range |x| <= 65504 on CUDA, where "
                              "it is rounded to fp16 for the tensor cores";
  if (!assert_on_device(valid, message)) TORCH_CHECK_VALUE(valid.item<bool>(), message);
}

}  // namespace kdops::cuda
