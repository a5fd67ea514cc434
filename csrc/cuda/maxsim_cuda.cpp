// MaxSim on CUDA: the ops (argument checks, outputs, which forward kernel a dtype takes) around
// the kernels of maxsim_kernels.cu.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <type_traits>

#include "common/maxsim_inputs.h"
#include "cuda/device.h"
#include "cuda/maxsim_kernels.h"

namespace kdops::cuda {
namespace {

// Whether fp32 matmuls may use TF32 (torch.backends.cuda.matmul.allow_tf32, read on the host;
// the simulated build reads the same flag).
bool tf32_allowed() { return at::globalContext().allowTF32CuBLAS(); }

// fp16/bf16 on tensor cores, fp32 on TF32 tensor cores when allowed, where d fits their tiles;
// else, and fp64, on the SIMT kernel, which takes any d. (A function template, so the branch not
// taken is not instantiated: no tensor-core kernel is built for fp64.)
template <typename scalar_t, bool kWriteArgmax>
void forward(const MaxSimArgs& a, at::Tensor& scores, int32_t* argmax) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto v = a.view<scalar_t>();
  constexpr bool half = std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;
  if constexpr (half || std::is_same_v<scalar_t, float>) {
    // allow_tf32 permits TF32, it does not require it: a d too wide for the TF32 tiles (4-byte
    // elements) runs exact, as it would without the flag; fp16/bf16 too wide for theirs run on
    // CUDA cores, in fp32 as on the tensor cores.
    if ((half || tf32_allowed()) && maxsim::tensor_core_fits<scalar_t, kWriteArgmax>(a.dim)) {
      const LaunchTarget on = launch_target();
      const int64_t partials = maxsim::tensor_core_partials<scalar_t, kWriteArgmax>(v, on.sms);
      const at::Tensor partial = partials > 0 ? at::empty({partials}, scores.options()) : at::Tensor();
      return maxsim::tensor_core_forward<scalar_t, kWriteArgmax>(
          v, scores.data_ptr<float>(), argmax, partials > 0 ? partial.data_ptr<float>() : nullptr, on);
    }
  }
  maxsim::simt_forward<scalar_t, acc_t, kWriteArgmax>(v, scores.data_ptr<acc_t>(), argmax, launch_target());
}

std::tuple<at::Tensor, at::Tensor> maxsim_cuda(const at::Tensor& Q, const at::Tensor& D,
                                               const c10::optional<at::Tensor>& q_mask,
                                               const c10::optional<at::Tensor>& d_mask,
                                               const c10::optional<at::Tensor>& doc_offsets,
                                               bool length_normalize, bool with_argmax) {
  const MaxSimArgs a = maxsim_args(Q, D, q_mask, d_mask, doc_offsets);
  const DeviceGuard guard(a.Q.device());
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(a.score_type()));
  at::Tensor argmax = empty_argmax(a, with_argmax);
  if (scores.numel() == 0) return {scores, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.Q.scalar_type(), "maxsim_cuda", [&] {
    if (with_argmax) {
      forward<scalar_t, true>(a, scores, argmax.data_ptr<int32_t>());
    } else {
      forward<scalar_t, false>(a, scores, nullptr);
    }
  });
  if (length_normalize) scores.div_(query_lengths(a));
  return {scores, argmax};
}

std::tuple<at::Tensor, at::Tensor> maxsim_backward_cuda(
    const at::Tensor& grad, const at::Tensor& argmax, const at::Tensor& Q, const at::Tensor& D,
    const c10::optional<at::Tensor>& q_mask, const c10::optional<at::Tensor>& doc_offsets,
    bool length_normalize, bool grad_Q, bool grad_D) {
  const MaxSimArgs a = maxsim_args(Q, D, q_mask, c10::nullopt, doc_offsets);
  check_maxsim_grad(grad, argmax, a);
  const DeviceGuard guard(a.Q.device());
  const at::Tensor w = backward_weights(grad, a, length_normalize);
  const at::Tensor idx = argmax.contiguous();
  at::Tensor dQ = grad_Q ? at::empty_like(a.Q) : a.Q.new_empty({0});
  // dD: the kernel writes every row of every doc (docs tile D); with no query token it is zero.
  at::Tensor dD = !grad_D ? a.D.new_empty({0}) : a.Nq * a.Lq > 0 ? at::empty_like(a.D) : at::zeros_like(a.D);
  // Nothing to gather when there are no query tokens or no docs.
  if (a.Nq * a.Lq > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.Q.scalar_type(), "maxsim_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto v = a.view<scalar_t>();
      const LaunchTarget on = launch_target();
      if (grad_Q) {
        maxsim::query_gradient<scalar_t, acc_t>(v, w.data_ptr<acc_t>(), idx.data_ptr<int32_t>(),
                                                dQ.data_ptr<scalar_t>(), on);
      }
      if (grad_D && a.layout.num_docs > 0) {
        // Hot rows of dD are summed in parts (maxsim_doc_grad.cuh): per-row hit counts and the
        // parts' fp32 (fp64) sums of the hot row groups a doc can have, when the shapes let any
        // row group be hot.
        const int64_t T = a.tokens.size(0), slices = maxsim::doc_grad_slices(a.layout, a.Nq, a.Lq);
        const bool split = slices > 1;
        const int64_t slot_rows = split ? maxsim::doc_grad_slot_rows(a.layout, a.Nq, a.Lq) : 0;
        const at::Tensor counts = split ? at::zeros({T}, a.Q.options().dtype(at::kInt)) : at::Tensor();
        const at::Tensor rows_of = split ? at::full({slot_rows}, -1, a.Q.options().dtype(at::kLong)) : at::Tensor();
        const at::Tensor partial = split ? at::empty({slices, slot_rows, a.dim}, w.options()) : at::Tensor();
        const maxsim::DocGradScratch<acc_t> scratch{slices, split ? counts.data_ptr<int32_t>() : nullptr,
                                                    split ? rows_of.data_ptr<int64_t>() : nullptr,
                                                    split ? partial.data_ptr<acc_t>() : nullptr};
        maxsim::doc_gradient<scalar_t, acc_t>(v, T, w.data_ptr<acc_t>(), idx.data_ptr<int32_t>(), scratch,
                                              dD.data_ptr<scalar_t>(), on);
      }
    });
  }
  return {dQ, dD};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) {
  m.impl("maxsim", &maxsim_cuda);
  m.impl("maxsim_backward", &maxsim_backward_cuda);
}

}  // namespace kdops::cuda
