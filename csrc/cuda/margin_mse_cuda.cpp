// Margin-MSE on CUDA: the ops (argument checks, outputs, dtype dispatch) around the kernels of
// margin_mse_kernels.cu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/margin_mse_inputs.h"
#include "common/reduction.h"
#include "cuda/device.h"
#include "cuda/grid_scratch.h"
#include "cuda/margin_mse_kernels.h"

namespace kdops::cuda {
namespace {

// t's data, or null where t was never allocated (the kernels take null for an output or scratch
// array they do without).
template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> forward(const MarginMSEArgs& a, Reduction reduction) {
  const DeviceGuard guard(a.student_pos.device());
  const auto opts = a.student_pos.options();
  at::Tensor per_term;
  if (reduction == Reduction::None) {
    per_term = a.pairwise ? at::empty({a.B}, opts) : at::empty({a.B, a.N}, opts);
  }
  at::Tensor loss = at::empty({}, opts);
  at::Tensor count = at::empty({}, opts.dtype(at::kLong));
  const int64_t blocks = margin_mse::forward_blocks(a.B * a.N);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, opts.dtype().toScalarType(),
                                  "margin_mse_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // The grid sum's partials and the stream's arrival counter, zero between launches (no memset
    // launch); a grid of one block (up to 2048 terms) needs neither.
    const GridScratch<acc_t> scratch(blocks, 1, opts);
    margin_mse::forward<scalar_t, acc_t>(a.view<scalar_t>(), reduction, data_or_null<scalar_t>(per_term),
                                         scratch.partial_sum(), scratch.partial_count(), scratch.done(),
                                         loss.data_ptr<scalar_t>(), count.data_ptr<int64_t>(), blocks,
                                         launch_target());
  });
  return {reduction == Reduction::None ? per_term : loss, count};
}

void backward(const MarginMSEArgs& a, Reduction reduction, const at::Tensor& grad,
              const int64_t* count, int64_t fixed_count, const at::Tensor& grad_pos,
              const at::Tensor& grad_neg) {
  check_margin_mse_grad(grad, a, reduction != Reduction::None);
  const DeviceGuard guard(a.student_pos.device());
  const at::Tensor g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "margin_mse_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    margin_mse::backward<scalar_t, acc_t>(a.view<scalar_t>(), reduction, g.data_ptr<scalar_t>(), count,
                                          fixed_count, grad_pos.data_ptr<scalar_t>(),
                                          grad_neg.data_ptr<scalar_t>() + a.neg_offset(), a.row_stride(),
                                          launch_target());
  });
}

std::tuple<at::Tensor, at::Tensor> margin_mse_cuda(const at::Tensor& student,
                                                   const at::Tensor& teacher,
                                                   const c10::optional<at::Tensor>& mask,
                                                   c10::string_view reduction) {
  return forward(margin_mse_multi_args(student, teacher, mask), parse_reduction(reduction));
}

at::Tensor margin_mse_backward_cuda(const at::Tensor& grad, const at::Tensor& student,
                                    const at::Tensor& teacher,
                                    const c10::optional<at::Tensor>& mask,
                                    const at::Tensor& count, c10::string_view reduction) {
  const auto a = margin_mse_multi_args(student, teacher, mask);
  at::Tensor grad_student = at::empty({a.B, a.N + 1}, student.options());
  check_count(count, a);
  backward(a, parse_reduction(reduction), grad, count.data_ptr<int64_t>(), 0, grad_student,
           grad_student);
  return grad_student;
}

at::Tensor margin_mse_pairwise_cuda(const at::Tensor& student_pos, const at::Tensor& student_neg,
                                    const at::Tensor& teacher_pos, const at::Tensor& teacher_neg,
                                    c10::string_view reduction) {
  const auto a = margin_mse_pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg);
  return std::get<0>(forward(a, parse_reduction(reduction)));
}

std::tuple<at::Tensor, at::Tensor> margin_mse_pairwise_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student_pos, const at::Tensor& student_neg,
    const at::Tensor& teacher_pos, const at::Tensor& teacher_neg, c10::string_view reduction) {
  const auto a = margin_mse_pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg);
  at::Tensor grad_pos = at::empty({a.B}, student_pos.options());
  at::Tensor grad_neg = at::empty({a.B}, student_pos.options());
  // Pairwise 'mean' divides by B, known on the host: no count tensor (and no fill launch).
  backward(a, parse_reduction(reduction), grad, nullptr, a.B, grad_pos, grad_neg);
  return {grad_pos, grad_neg};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) {
  m.impl("margin_mse", &margin_mse_cuda);
  m.impl("margin_mse_backward", &margin_mse_backward_cuda);
  m.impl("margin_mse_pairwise", &margin_mse_pairwise_cuda);
  m.impl("margin_mse_pairwise_backward", &margin_mse_pairwise_backward_cuda);
}

}  // namespace kdops::cuda
