// maxsim_quantized on CUDA (schema and formats: csrc/kdops.cpp; checks shared with the CPU
// kernel: common/maxsim_serving_inputs.h). int8 queries and docs run on integer tensor cores
// (maxsim_serving_kernels.h int8_forward), the same values as the CPU's exact int8 kernel. The
// other pairings (a float32 or float8_e4m3fn side) have no CUDA kernel yet and are refused.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/maxsim_serving_inputs.h"
#include "cuda/device.h"
#include "cuda/maxsim_serving_kernels.h"

namespace kdops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> maxsim_quantized_cuda(
    const at::Tensor& Q, const c10::optional<at::Tensor>& q_scale, const at::Tensor& D,
    const at::Tensor& d_scale, const c10::optional<at::Tensor>& q_mask,
    const c10::optional<at::Tensor>& d_mask, bool length_normalize, bool with_argmax) {
  const QuantizedArgs in = quantized_args(Q, q_scale, D, d_scale, q_mask, d_mask);
  const ServingArgs& a = in.a;
  TORCH_CHECK_NOT_IMPLEMENTED(in.int8(), "kdops.maxsim_quantized on CUDA takes int8 Q and D only for now, got Q ",
                              a.Q.scalar_type(), " and D ", in.D.scalar_type(), ". Score this pairing on the "
                              "CPU (.cpu()), or quantize both sides with kdops.quantize_int8.");
  const DeviceGuard guard(a.Q.device());
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  if (scores.numel() == 0) return {scores, argmax};
  const MaxSimView<int8_t> v{a.Q.data_ptr<int8_t>(),
                             in.D.data_ptr<int8_t>(),
                             a.q_mask.defined() ? a.q_mask.data_ptr<bool>() : nullptr,
                             a.d_mask.defined() ? a.d_mask.data_ptr<bool>() : nullptr,
                             a.Nq,
                             a.Lq,
                             a.dim,
                             a.layout};
  const float* qs = a.q_scale.data_ptr<float>();
  const float* ds = in.d_scale.data_ptr<float>();
  if (with_argmax) {
    maxsim_serving::int8_forward<true>(v, qs, ds, scores.data_ptr<float>(), argmax.data_ptr<int32_t>(),
                                       launch_target());
  } else {
    maxsim_serving::int8_forward<false>(v, qs, ds, scores.data_ptr<float>(), nullptr, launch_target());
  }
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) { m.impl("maxsim_quantized", &maxsim_quantized_cuda); }

}  // namespace kdops::cuda
