// Margin-MSE CPU kernels: one pass over the terms forward (loss and valid-term count together),
// one pass over the rows backward. Math: common/margin_mse.h.
//
// Rows of one negative (the pairwise form) are vectorised across rows, wider rows across their
// negatives; the reductions are `omp simd` reductions inside fixed-size chunks, so the float
// sum order is fixed whatever the thread count.
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

// The loss term of (b, j), written to per_term[b * N + j] when given.
template <typename scalar_t, typename acc_t>
inline acc_t forward_term(const MarginMSEView<scalar_t>& v, int64_t b, int64_t j, bool valid,
                          scalar_t* per_term) {
  const acc_t r = v.template residual<acc_t>(b, j);
  const acc_t value = valid ? r * r : acc_t(0);
  if (per_term != nullptr) per_term[b * v.N + j] = static_cast<scalar_t>(value);
  return value;
}

// Without a mask every term is valid and the count is B * N, so the unmasked loops are plain
// float sums (a float-and-int64 reduction in one loop defeats the vectoriser).
template <bool kMasked, typename scalar_t>
SumCount<at::opmath_type<scalar_t>> forward_impl(const MarginMSEView<scalar_t>& v,
                                                 scalar_t* per_term) {
  using acc_t = at::opmath_type<scalar_t>;
  return deterministic_sum<SumCount<acc_t>>(v.B, [&](int64_t b0, int64_t b1) {
    acc_t sum = 0;
    int64_t valid_terms = kMasked ? 0 : (b1 - b0) * v.N;
    if (v.N == 1) {
#pragma omp simd reduction(+ : sum, valid_terms)
      for (int64_t b = b0; b < b1; ++b) {
        const bool valid = !kMasked || v.valid(b, 0);
        sum += forward_term<scalar_t, acc_t>(v, b, 0, valid, per_term);
        if constexpr (kMasked) valid_terms += valid;
      }
    } else {
      for (int64_t b = b0; b < b1; ++b) {
#pragma omp simd reduction(+ : sum, valid_terms)
        for (int64_t j = 0; j < v.N; ++j) {
          const bool valid = !kMasked || v.valid(b, j);
          sum += forward_term<scalar_t, acc_t>(v, b, j, valid, per_term);
          if constexpr (kMasked) valid_terms += valid;
        }
      }
    }
    return SumCount<acc_t>{sum, valid_terms};
  });
}

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
    const auto total = a.mask.defined() ? forward_impl<true>(v, out) : forward_impl<false>(v, out);
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

// d loss / d s_neg of term (b, j), written to grad_neg; returns its negative, d / d s_pos.
template <bool kMasked, typename scalar_t, typename acc_t>
inline acc_t backward_term(const MarginMSEView<scalar_t>& v, int64_t b, int64_t j,
                           acc_t upstream, scalar_t* grad_neg, int64_t stride) {
  acc_t d = margin_mse_term_grad(v.template residual<acc_t>(b, j), upstream);
  if constexpr (kMasked) d = v.valid(b, j) ? d : acc_t(0);
  grad_neg[b * stride + j] = static_cast<scalar_t>(-d);
  return d;
}

// The mask and the upstream's shape are template flags, so each loop is branch-free.
template <bool kMasked, bool kPerTerm, typename scalar_t>
void backward_rows(const MarginMSEView<scalar_t>& v, const scalar_t* grad,
                   at::opmath_type<scalar_t> shared, scalar_t* grad_pos, scalar_t* grad_neg,
                   int64_t stride) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, v.B, 4096, [&](int64_t b0, int64_t b1) {
    if (v.N == 1) {
#pragma omp simd
      for (int64_t b = b0; b < b1; ++b) {
        const acc_t upstream = kPerTerm ? static_cast<acc_t>(grad[b]) : shared;
        grad_pos[b * stride] = static_cast<scalar_t>(
            backward_term<kMasked, scalar_t, acc_t>(v, b, 0, upstream, grad_neg, stride));
      }
      return;
    }
    for (int64_t b = b0; b < b1; ++b) {
      acc_t pos = 0;
#pragma omp simd reduction(+ : pos)
      for (int64_t j = 0; j < v.N; ++j) {
        const acc_t upstream = kPerTerm ? static_cast<acc_t>(grad[b * v.N + j]) : shared;
        pos += backward_term<kMasked, scalar_t, acc_t>(v, b, j, upstream, grad_neg, stride);
      }
      grad_pos[b * stride] = static_cast<scalar_t>(pos);
    }
  });
}

template <typename scalar_t>
void backward_impl(const MarginMSEView<scalar_t>& v, Reduction reduction, const scalar_t* grad,
                   int64_t count, scalar_t* grad_pos, scalar_t* grad_neg, int64_t stride) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t shared = static_cast<acc_t>(grad[0]);
  if (reduction == Reduction::Mean) shared /= static_cast<acc_t>(std::max<int64_t>(count, 1));
  const bool masked = v.mask != nullptr, per_term = reduction == Reduction::None;
  if (masked && per_term) backward_rows<true, true>(v, grad, shared, grad_pos, grad_neg, stride);
  if (masked && !per_term) backward_rows<true, false>(v, grad, shared, grad_pos, grad_neg, stride);
  if (!masked && per_term) backward_rows<false, true>(v, grad, shared, grad_pos, grad_neg, stride);
  if (!masked && !per_term) backward_rows<false, false>(v, grad, shared, grad_pos, grad_neg, stride);
}

// Writes d loss / d student into grad_pos (the positives) and grad_neg (the negatives); the
// teacher's gradients are their negatives.
void backward(const MarginMSEArgs& a, Reduction reduction, const at::Tensor& grad,
              int64_t count, const at::Tensor& grad_pos, const at::Tensor& grad_neg) {
  check_margin_mse_grad(grad, a, reduction != Reduction::None);
  const at::Tensor g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "margin_mse_backward_cpu", [&] {
    backward_impl<scalar_t>(a.view<scalar_t>(), reduction, g.data_ptr<scalar_t>(), count,
                            grad_pos.data_ptr<scalar_t>(),
                            grad_neg.data_ptr<scalar_t>() + a.neg_offset(), a.row_stride());
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
  check_count(count, a);
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
