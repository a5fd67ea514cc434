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

// int32 accumulation of 255 * 128 per dim (the +128 offset of maxsim_int8_panel.h) stays exact
// up to this embedding size.
constexpr int64_t kInt8MaxDim = 65536;

std::tuple<at::Tensor, at::Tensor> maxsim_quantized_cpu(
    const at::Tensor& Q, const c10::optional<at::Tensor>& q_scale, const at::Tensor& D,
    const at::Tensor& d_scale, const c10::optional<at::Tensor>& q_mask,
    const c10::optional<at::Tensor>& d_mask, bool length_normalize, bool with_argmax) {
  TORCH_CHECK_TYPE(is_quantized_type(D.scalar_type()), "D must be int8 or float8_e4m3fn (float "
                   "docs: kdops.maxsim), got ", D.scalar_type());
  check_same_device(D, Q, "D", "Q");
  TORCH_CHECK_VALUE(D.dim() == 3 || D.dim() == 4, "D must be [Nd, Ld, d] (all pairs) or "
                    "[Nq, K, Ld, d] (per-query candidates), got shape ", D.sizes());
  const ServingArgs a = serving_args(Q, q_scale, true, D.sizes().slice(0, D.dim() - 1), "D", q_mask, d_mask);
  TORCH_CHECK_VALUE(D.size(-1) == a.dim, "D must have the embedding size d = ", a.dim,
                    " of Q in its last dimension, got shape ", D.sizes());
  const at::Tensor docs = D.contiguous();
  const at::Tensor scale = checked_scale(d_scale, D.sizes().slice(0, D.dim() - 1), Q, "d_scale", "D.shape[:-1]");
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  float* out = scores.data_ptr<float>();
  int32_t* idx = with_argmax ? argmax.data_ptr<int32_t>() : nullptr;
  const CpuIsa isa = cpu_isa();
  if (a.Q.scalar_type() == at::kChar && docs.scalar_type() == at::kChar) {
    TORCH_CHECK_VALUE(a.dim <= kInt8MaxDim, "int8 Q and D need an embedding size d <= ", kInt8MaxDim,
                      " (exact int32 accumulation), got ", a.dim);
    const int8_t* q = a.Q.data_ptr<int8_t>();
    const float* qs = a.q_scale.data_ptr<float>();
    const int8_t* d = docs.data_ptr<int8_t>();
    const float* ds = scale.data_ptr<float>();
    serving_forward(a, [&] { return Int8Policy(q, qs, a.Lq, a.dim, d, ds, isa); }, out, idx);
  } else {
    const TokenRows query{a.Q.data_ptr(), a.Q.scalar_type(),
                          a.q_scale.defined() ? a.q_scale.data_ptr<float>() : nullptr, a.dim};
    const TokenRows doc_rows{docs.data_ptr(), docs.scalar_type(), scale.data_ptr<float>(), a.dim};
    serving_forward(a, [&] { return DecodedPolicy<TokenRows>(query, a.Lq, doc_rows, isa); }, out, idx);
  }
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) { m.impl("maxsim_quantized", &maxsim_quantized_cpu); }

}  // namespace kdops::cpu
