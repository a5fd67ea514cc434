// maxsim_residual on CUDA (schema and format: csrc/kdops.cpp; checks shared with the CPU kernel:
// common/maxsim_serving_inputs.h): each doc tile is decoded as it is staged in shared memory,
// normalize(centroids[code] + bucket_weights[b]) rounded to fp16, and multiplied with the query
// (rounded to fp16, so within fp16's range) on fp16 tensor cores with fp32 sums
// (maxsim_serving_kernels.h): no decoded doc is ever written to global memory. The CPU decodes
// to float32: the scores agree to the two fp16 roundings, 2^-10 relative per product.
#include <torch/library.h>

#include "common/maxsim_serving_inputs.h"
#include "cuda/maxsim_serving_op.h"

namespace kdops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> maxsim_residual_cuda(
    const at::Tensor& Q, const at::Tensor& codes, const at::Tensor& residuals,
    const at::Tensor& centroids, const at::Tensor& bucket_weights,
    const c10::optional<at::Tensor>& q_mask, const c10::optional<at::Tensor>& d_mask,
    bool length_normalize, bool with_argmax) {
  const ResidualArgs in = residual_args(Q, codes, residuals, centroids, bucket_weights, q_mask, d_mask);
  using maxsim_serving::Format;
  const ServingOperands operands{nullptr,  // the docs are in `residual`
                                 Format::kFloat,
                                 nullptr,
                                 Format::kResidual,
                                 nullptr,
                                 {in.codes.data_ptr<int32_t>(), in.residuals.data_ptr<uint8_t>(),
                                  in.centroids.data_ptr<float>(), in.weights.data_ptr<float>(), in.nbits}};
  return serving_op(in.a, operands, length_normalize, with_argmax);
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) { m.impl("maxsim_residual", &maxsim_residual_cuda); }

}  // namespace kdops::cuda
