// maxsim_quantized on CUDA (schema and formats: csrc/kdops.cpp; checks shared with the CPU
// kernel: common/maxsim_serving_inputs.h), on tensor cores (maxsim_serving_kernels.h):
//   int8 Q and D: exact int32 sums (mma.sync m16n8k32 .s8): the CPU's int8 kernel's scores and
//     argmax, bit for bit.
//   any other pairing (float32 / int8 / float8_e4m3fn Q with int8 / float8_e4m3fn D): tokens
//     decoded to fp16 as they are staged (int8 and e4m3 exactly; a float32 Q rounded to fp16, so
//     its values must lie within fp16's range), fp32 sums (mma.sync m16n8k16), the scales applied
//     outside the dot products. The CPU decodes x * scale to float32 instead: the scores agree to
//     float32 rounding (and, for a float32 Q, its fp16 rounding: a relative 2^-11 per element).
#include <torch/library.h>

#include "common/maxsim_serving_inputs.h"
#include "cuda/maxsim_serving_op.h"

namespace kdops::cuda {
namespace {

using maxsim_serving::Format;

Format format_of(at::ScalarType type) {
  return type == at::kChar ? Format::kInt8 : type == at::kFloat8_e4m3fn ? Format::kE4m3 : Format::kFloat;
}

std::tuple<at::Tensor, at::Tensor> maxsim_quantized_cuda(
    const at::Tensor& Q, const c10::optional<at::Tensor>& q_scale, const at::Tensor& D,
    const at::Tensor& d_scale, const c10::optional<at::Tensor>& q_mask,
    const c10::optional<at::Tensor>& d_mask, bool length_normalize, bool with_argmax) {
  const QuantizedArgs in = quantized_args(Q, q_scale, D, d_scale, q_mask, d_mask);
  const ServingArgs& a = in.a;
  const ServingOperands operands{in.D.data_ptr(),
                                 format_of(a.Q.scalar_type()),
                                 a.q_scale.defined() ? a.q_scale.data_ptr<float>() : nullptr,
                                 format_of(in.D.scalar_type()),
                                 in.d_scale.data_ptr<float>(),
                                 {}};
  return serving_op(a, operands, length_normalize, with_argmax);
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) { m.impl("maxsim_quantized", &maxsim_quantized_cuda); }

}  // namespace kdops::cuda
