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
  TORCH_CHECK_TYPE(codes.scalar_type() == at::kInt || codes.scalar_type() == at::kLong,
                   "codes must be int32 or int64 (centroid ids), got ", codes.scalar_type());
  TORCH_CHECK_TYPE(residuals.scalar_type() == at::kByte, "residuals must be uint8 (packed bits), got ",
                   residuals.scalar_type());
  TORCH_CHECK_TYPE(centroids.scalar_type() == at::kFloat, "centroids must be float32, got ", centroids.scalar_type());
  TORCH_CHECK_TYPE(bucket_weights.scalar_type() == at::kFloat, "bucket_weights must be float32, got ",
                   bucket_weights.scalar_type());
  check_same_device(codes, Q, "codes", "Q");
  check_same_device(residuals, Q, "residuals", "Q");
  check_same_device(centroids, Q, "centroids", "Q");
  check_same_device(bucket_weights, Q, "bucket_weights", "Q");
  const ServingArgs a = serving_args(Q, c10::nullopt, false, codes.sizes(), "codes", q_mask, d_mask);
  check_dim(centroids, 2, "centroids", "[C, d]");
  TORCH_CHECK_VALUE(centroids.size(1) == a.dim && centroids.size(0) >= 1, "centroids must be [C, d] with C >= 1 "
                    "and the embedding size d = ", a.dim, " of Q, got shape ", centroids.sizes());
  TORCH_CHECK_VALUE(residuals.dim() == codes.dim() + 1 && residuals.sizes().slice(0, codes.dim()) == codes.sizes(),
                    "residuals must be codes.shape + [d * nbits / 8] = ", codes.sizes(), " + [...], got ",
                    residuals.sizes());
  const int64_t bytes = residuals.size(-1);
  const int64_t nbits = bytes * 8 % a.dim == 0 ? bytes * 8 / a.dim : 0;
  TORCH_CHECK_VALUE(nbits == 1 || nbits == 2 || nbits == 4, "residuals' last dimension must be d * nbits / 8 "
                    "with nbits 1, 2 or 4 (d = ", a.dim, ": ", a.dim / 8, ", ", a.dim / 4, " or ", a.dim / 2,
                    " bytes), got ", bytes);
  TORCH_CHECK_VALUE(bucket_weights.dim() == 1 && bucket_weights.size(0) == (int64_t(1) << nbits),
                    "bucket_weights must be [2^nbits] = [", int64_t(1) << nbits, "] for ", nbits,
                    "-bit residuals, got shape ", bucket_weights.sizes());
  const at::Tensor ids = codes.to(at::kInt).contiguous();
  if (ids.numel() > 0) {
    const int64_t low = ids.min().item<int32_t>(), high = ids.max().item<int32_t>();
    TORCH_CHECK_INDEX(low >= 0 && high < centroids.size(0), "codes must be centroid ids in [0, ",
                      centroids.size(0), "), got values in [", low, ", ", high, "]");
  }
  const at::Tensor packed = residuals.contiguous(), table = centroids.contiguous();
  const at::Tensor weights = bucket_weights.contiguous();
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  const TokenRows query{a.Q.data_ptr(), at::kFloat, nullptr, a.dim};
  const ResidualRows docs(ids.data_ptr<int32_t>(), packed.data_ptr<uint8_t>(), table.data_ptr<float>(),
                          weights.data_ptr<float>(), a.dim, static_cast<int>(nbits));
  const CpuIsa isa = cpu_isa();
  serving_forward(a, [&] { return DecodedPolicy<ResidualRows>(query, a.Lq, docs, isa); },
                  scores.data_ptr<float>(), with_argmax ? argmax.data_ptr<int32_t>() : nullptr);
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) { m.impl("maxsim_residual", &maxsim_residual_cpu); }

}  // namespace kdops::cpu
