// Margin-MSE CPU kernels: one pass over the terms forward (loss and valid-term count together),
// one pass over the rows backward. Math: common/margin_mse.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include "common/margin_mse_inputs.h"
#include "common/reduction.h"
#include "cpu/deterministic_sum.h"

namespace kdops::cpu {
namespace {

// Returns (loss, count): count is the number of valid terms, the normaliser of 'mean'.
std::tuple<at::Tensor, at::Tensor> forward(const MarginMSEArgs& a, Reduction reduction) {
  const auto opts = a.student_pos.options();
  at::Tensor per_term;
  if (reduction == Reduction::None) {
    per_term = a.pairwise ? at::empty({a.B}, opts) : at::empty({a.B, a.N}, opts);
  }
  at::Tensor loss, count;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, opts.dtype().toScalarType(),
                                  "margin_mse_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.view<scalar_t>();
    scalar_t* out = per_term.defined() ? per_term.data_ptr<scalar_t>() : nullptr;
    const auto total = deterministic_sum<SumCount<acc_t>>(a.B, [&](int64_t b0, int64_t b1) {
      SumCount<acc_t> acc;
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t j = 0; j < v.N; ++j) {
          const bool valid = v.valid(b, j);
          const acc_t r = v.template residual<acc_t>(b, j);
          const acc_t term = valid ? r * r : acc_t(0);
          if (out != nullptr) out[b * v.N + j] = static_cast<scalar_t>(term);
          acc.sum += term;
          acc.count += valid;
        }
      }
      return acc;
    });
    count = at::scalar_tensor(total.count, opts.dtype(at::kLong));
    if (reduction == Reduction::None) {
      loss = per_term;
    } else {
      const acc_t value = reduction == Reduction::Sum
                              ? total.sum
                              : total.sum / static_cast<acc_t>(std::max<int64_t>(total.count, 1));
      loss = at::scalar_tensor(static_cast<scalar_t>(value), opts);
    }
  });
  return {loss, count};
}

// Writes d loss / d student into grad_pos (the positives) and grad_neg (the negatives); the
// teacher's gradients are their negatives.
void backward(const MarginMSEArgs& a, Reduction reduction, const at::Tensor& grad,
              int64_t count, const at::Tensor& grad_pos, const at::Tensor& grad_neg) {
  check_margin_mse_grad(grad, a, reduction != Reduction::None);
  const at::Tensor g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "margin_mse_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.view<scalar_t>();
    const scalar_t* g_terms = g.data_ptr<scalar_t>();
    acc_t shared = static_cast<acc_t>(g_terms[0]);
    if (reduction == Reduction::Mean) shared /= static_cast<acc_t>(std::max<int64_t>(count, 1));
    scalar_t* gp = grad_pos.data_ptr<scalar_t>();
    scalar_t* gn = grad_neg.data_ptr<scalar_t>() + a.neg_offset();
    const int64_t stride = a.row_stride();
    at::parallel_for(0, a.B, 1024, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc_t pos = 0;
        for (int64_t j = 0; j < v.N; ++j) {
          const acc_t upstream = reduction == Reduction::None
                                     ? static_cast<acc_t>(g_terms[b * v.N + j])
                                     : shared;
          const acc_t d = v.valid(b, j)
                              ? margin_mse_term_grad(v.template residual<acc_t>(b, j), upstream)
                              : acc_t(0);
          gn[b * stride + j] = static_cast<scalar_t>(-d);
          pos += d;
        }
        gp[b * stride] = static_cast<scalar_t>(pos);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> margin_mse_cpu(const at::Tensor& student,
                                                  const at::Tensor& teacher,
                                                  const c10::optional<at::Tensor>& mask,
                                                  c10::string_view reduction) {
  return forward(margin_mse_multi_args(student, teacher, mask), parse_reduction(reduction));
}

at::Tensor margin_mse_backward_cpu(const at::Tensor& grad, const at::Tensor& student,
                                   const at::Tensor& teacher,
                                   const c10::optional<at::Tensor>& mask, const at::Tensor& count,
                                   c10::string_view reduction) {
  const auto a = margin_mse_multi_args(student, teacher, mask);
  at::Tensor grad_student = at::empty({a.B, a.N + 1}, student.options());
  backward(a, parse_reduction(reduction), grad, count.item<int64_t>(), grad_student, grad_student);
  return grad_student;
}

at::Tensor margin_mse_pairwise_cpu(const at::Tensor& student_pos, const at::Tensor& student_neg,
                                   const at::Tensor& teacher_pos, const at::Tensor& teacher_neg,
                                   c10::string_view reduction) {
  const auto a = margin_mse_pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg);
  return std::get<0>(forward(a, parse_reduction(reduction)));
}

std::tuple<at::Tensor, at::Tensor> margin_mse_pairwise_backward_cpu(
    const at::Tensor& grad, const at::Tensor& student_pos, const at::Tensor& student_neg,
    const at::Tensor& teacher_pos, const at::Tensor& teacher_neg, c10::string_view reduction) {
  const auto a = margin_mse_pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg);
  at::Tensor grad_pos = at::empty({a.B}, student_pos.options());
  at::Tensor grad_neg = at::empty({a.B}, student_pos.options());
  backward(a, parse_reduction(reduction), grad, a.B, grad_pos, grad_neg);
  return {grad_pos, grad_neg};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) {
  m.impl("margin_mse", &margin_mse_cpu);
  m.impl("margin_mse_backward", &margin_mse_backward_cpu);
  m.impl("margin_mse_pairwise", &margin_mse_pairwise_cpu);
  m.impl("margin_mse_pairwise_backward", &margin_mse_pairwise_backward_cpu);
}

}  // namespace kdops::cpu
