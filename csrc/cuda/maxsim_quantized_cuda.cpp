// maxsim_quantized on CUDA (schema and formats: csrc/kdops.cpp; checks shared with the CPU
// kernel: common/maxsim_serving_inputs.h), on tensor cores (maxsim_serving_kernels.h):
//   int8 Q and D: exact int32 sums (mma.sync m16n8k32 .s8): the CPU's int8 kernel's scores and
//     argmax, bit for bit.
//   any other pairing (float32 / int8 / float8_e4m3fn Q with int8 / float8_e4m3fn D): tokens
//     decoded to fp16 as they are staged (int8 and e4m3 exactly; a float32 Q rounded to fp16, so
//     its values must lie within fp16's range), fp32 sums (mma.sync m16n8k16), the scales applied
//     outside the dot products. The CPU decodes x * scale to float32 instead: the scores agree to
//     float32 rounding (and, for a float32 Q, its fp16 rounding: a relative 2^-11 per element).
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/maxsim_serving_inputs.h"
#include "cuda/device.h"
#include "cuda/half_range.h"
#include "cuda/maxsim_serving_kernels.h"

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
  const DeviceGuard guard(a.Q.device());
  if (a.Q.scalar_type() == at::kFloat) check_half_range(a.Q);
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  if (scores.numel() == 0) return {scores, argmax};
  const MaxSimView<char> v = a.view(in.D.data_ptr());
  const Format qf = format_of(a.Q.scalar_type()), df = format_of(in.D.scalar_type());
  const float* qs = a.q_scale.defined() ? a.q_scale.data_ptr<float>() : nullptr;
  const float* ds = in.d_scale.data_ptr<float>();
  const maxsim_serving::ResidualDocs none{};
  if (with_argmax) {
    maxsim_serving::serving_forward<true>(v, qf, qs, df, ds, none, scores.data_ptr<float>(),
                                          argmax.data_ptr<int32_t>(), launch_target());
  } else {
    maxsim_serving::serving_forward<false>(v, qf, qs, df, ds, none, scores.data_ptr<float>(), nullptr,
                                           launch_target());
  }
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) { m.impl("maxsim_quantized", &maxsim_quantized_cuda); }

}  // namespace kdops::cuda
