// maxsim_quantized on the CPU (schema and formats: csrc/kdops.cpp). int8 queries and docs take
// the exact integer kernel (Int8Policy); every other pair (a float32 query, or a float8_e4m3fn
// side) is decoded to float32 a block at a time and scored by the float kernel (DecodedPolicy).
// Math: kdops/reference.py maxsim_quantized.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/maxsim_serving_inputs.h"
#include "cpu/maxsim_serving_driver.h"
#include "cpu/maxsim_serving_policies.h"

namespace kdops::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> maxsim_quantized_cpu(
    const at::Tensor& Q, const c10::optional<at::Tensor>& q_scale, const at::Tensor& D,
    const at::Tensor& d_scale, const c10::optional<at::Tensor>& q_mask,
    const c10::optional<at::Tensor>& d_mask, bool length_normalize, bool with_argmax) {
  const QuantizedArgs in = quantized_args(Q, q_scale, D, d_scale, q_mask, d_mask);
  const ServingArgs& a = in.a;
  const at::Tensor &docs = in.D, &scale = in.d_scale;
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  float* out = scores.data_ptr<float>();
  int32_t* idx = with_argmax ? argmax.data_ptr<int32_t>() : nullptr;
  const CpuIsa isa = cpu_isa();
  if (in.int8()) {
    const int8_t* q = a.Q.data_ptr<int8_t>();
    const float* qs = a.q_scale.data_ptr<float>();
    const int8_t* d = docs.data_ptr<int8_t>();
    const float* ds = scale.data_ptr<float>();
    serving_forward(a, [&] { return Int8Policy(q, qs, a.Lq, a.dim, d, ds, isa); }, out, idx);
  } else {
    const TokenRows query{a.Q.data_ptr(), a.Q.scalar_type(),
                          a.q_scale.defined() ? a.q_scale.data_ptr<float>() : nullptr, a.dim, isa};
    const TokenRows doc_rows{docs.data_ptr(), docs.scalar_type(), scale.data_ptr<float>(), a.dim, isa};
    serving_forward(a, [&] { return DecodedPolicy<TokenRows>(query, a.Lq, doc_rows, isa); }, out, idx);
  }
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) { m.impl("maxsim_quantized", &maxsim_quantized_cpu); }

}  // namespace kdops::cpu
