// Margin-MSE CUDA kernels: one launch forward (per-term losses and/or a deterministic grid sum
// of loss and valid-term count), one launch backward (a thread per row). Math:
// common/margin_mse.h, shared with the CPU kernels.
//
// The forward's grid is set by the work alone (kTermsPerBlock terms a block), never by the
// device's SM count: the grid sum adds the same partials in the same order on every GPU model,
// so the loss is bit-identical across devices (tests/test_simulated_kernels.py, two presets).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "common/margin_mse_inputs.h"
#include "common/reduction.h"
#include "cuda/grid_sum.cuh"
#include "cuda/launch.cuh"

namespace kdops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTermsPerThread = 8;  // enough work a block to hide the grid sum's last-block pass
constexpr int64_t kTermsPerBlock = int64_t(kThreads) * kTermsPerThread;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    margin_mse_forward_kernel(MarginMSEView<scalar_t> v, Reduction reduction, scalar_t* per_term,
                              acc_t* partial_sum, long long* partial_count, unsigned int* done,
                              scalar_t* loss, int64_t* count) {
  const int64_t terms = v.B * v.N;
  acc_t sum = 0;
  long long valid_terms = 0;
  // The block's chunk of kTermsPerBlock terms, a coalesced row of kThreads at a time.
  const int64_t first = blockIdx.x * kTermsPerBlock + threadIdx.x;
  for (int i = 0; i < kTermsPerThread; ++i) {
    const int64_t t = first + int64_t(i) * kThreads;
    if (t >= terms) break;
    const int64_t b = t / v.N, j = t - b * v.N;
    const bool valid = v.valid(b, j);
    const acc_t r = v.template residual<acc_t>(b, j);
    const acc_t term = valid ? r * r : acc_t(0);
    if (per_term != nullptr) per_term[t] = static_cast<scalar_t>(term);
    sum += term;
    valid_terms += valid;
  }
  sum = block_sum<kThreads>(sum);
  valid_terms = block_sum<kThreads>(valid_terms);
  if (grid_sum<kThreads>(sum, valid_terms, partial_sum, partial_count, done) && threadIdx.x == 0) {
    *count = valid_terms;
    if (reduction == Reduction::Mean) sum /= static_cast<acc_t>(valid_terms > 0 ? valid_terms : 1);
    if (reduction != Reduction::None) *loss = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    margin_mse_backward_kernel(MarginMSEView<scalar_t> v, Reduction reduction,
                               const scalar_t* grad, const int64_t* count, int64_t fixed_count,
                               scalar_t* grad_pos,
                               scalar_t* grad_neg, int64_t stride) {
  acc_t shared = static_cast<acc_t>(grad[0]);
  // 'mean' divides by the valid-term count: the forward's (on the device) or a known one.
  const int64_t terms = count != nullptr ? *count : fixed_count;
  if (reduction == Reduction::Mean) shared /= static_cast<acc_t>(terms > 0 ? terms : 1);
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < v.B;
       b += int64_t(gridDim.x) * kThreads) {
    acc_t pos = 0;
    for (int64_t j = 0; j < v.N; ++j) {
      const acc_t upstream =
          reduction == Reduction::None ? static_cast<acc_t>(grad[b * v.N + j]) : shared;
      const acc_t d = v.valid(b, j)
                          ? margin_mse_term_grad(v.template residual<acc_t>(b, j), upstream)
                          : acc_t(0);
      grad_neg[b * stride + j] = static_cast<scalar_t>(-d);
      pos += d;
    }
    grad_pos[b * stride] = static_cast<scalar_t>(pos);
  }
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
  const int64_t blocks = std::max<int64_t>(1, (a.B * a.N + kTermsPerBlock - 1) / kTermsPerBlock);
  TORCH_CHECK_VALUE(blocks <= std::numeric_limits<int>::max(), "student holds too many terms (B*N = ",
                    a.B * a.N, ") for one launch");
  at::Tensor done = at::zeros({1}, opts.dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, opts.dtype().toScalarType(),
                                  "margin_mse_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor partial_sum = at::empty({blocks}, opts.dtype(c10::CppTypeToScalarType<acc_t>::value));
    at::Tensor partial_count = at::empty({blocks}, opts.dtype(at::kLong));
    launch(margin_mse_forward_kernel<scalar_t, acc_t>, static_cast<int>(blocks), kThreads, 0, current_stream(),
           a.view<scalar_t>(), reduction,
           per_term.defined() ? per_term.data_ptr<scalar_t>() : nullptr,
           partial_sum.data_ptr<acc_t>(),
           reinterpret_cast<long long*>(partial_count.data_ptr<int64_t>()),
           reinterpret_cast<unsigned int*>(done.data_ptr<int>()), loss.data_ptr<scalar_t>(),
           count.data_ptr<int64_t>());
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
    launch(margin_mse_backward_kernel<scalar_t, acc_t>, grid_size(a.B, kThreads), kThreads, 0,
           current_stream(), a.view<scalar_t>(), reduction, g.data_ptr<scalar_t>(), count,
           fixed_count, grad_pos.data_ptr<scalar_t>(),
           grad_neg.data_ptr<scalar_t>() + a.neg_offset(), a.row_stride());
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
