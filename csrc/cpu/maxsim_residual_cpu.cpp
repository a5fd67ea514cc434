// maxsim_residual on the CPU (schema and format: csrc/kdops.cpp, cpu/serving_tokens.h
// ResidualRows): each doc token is decoded from its centroid id and n-bit residual codes into a
// block buffer, a block at a time, and scored by the float MaxSim kernel (DecodedPolicy); the
// docs are never decoded whole. Math: kdops/reference.py maxsim_residual.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/maxsim_serving_inputs.h"
#include "cpu/maxsim_serving_driver.h"
#include "cpu/maxsim_serving_policies.h"

namespace kdops::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> maxsim_residual_cpu(
    const at::Tensor& Q, const at::Tensor& codes, const at::Tensor& residuals,
    const at::Tensor& centroids, const at::Tensor& bucket_weights,
    const c10::optional<at::Tensor>& q_mask, const c10::optional<at::Tensor>& d_mask,
    bool length_normalize, bool with_argmax) {
  const ResidualArgs in = residual_args(Q, codes, residuals, centroids, bucket_weights, q_mask, d_mask);
  const ServingArgs& a = in.a;
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  const CpuIsa isa = cpu_isa();
  const TokenRows query{a.Q.data_ptr(), at::kFloat, nullptr, a.dim, isa};
  const ResidualRows docs(in.codes.data_ptr<int32_t>(), in.residuals.data_ptr<uint8_t>(),
                          in.centroids.data_ptr<float>(), in.weights.data_ptr<float>(), a.dim, in.nbits, isa);
  serving_forward(a, [&] { return DecodedPolicy<ResidualRows>(query, a.Lq, docs, isa); },
                  scores.data_ptr<float>(), with_argmax ? argmax.data_ptr<int32_t>() : nullptr);
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) { m.impl("maxsim_residual", &maxsim_residual_cpu); }

}  // namespace kdops::cpu
