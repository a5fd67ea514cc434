// Margin-MSE CPU kernels: one pass over the terms forward (loss and valid-term count together),
// one pass over the rows backward. Math: common/margin_mse.h.
//
// Float multi-negative rows, reduced, run in AVX-512 or AVX2 vectors where the CPU has them
// (margin_mse_rows.h; AVX2 for masked calls); everything else runs the loops below, cloned per
// ISA. Sums run inside fixed-size chunks in a fixed order, so the float result does not depend on
// the thread count (it may on the ISA path: KDOPS_CPU_ISA).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include "common/margin_mse_inputs.h"
#include "common/reduction.h"
#include "cpu/cpu_clones.h"
#include "cpu/cpu_isa.h"
#include "cpu/deterministic_sum.h"
#include "cpu/margin_mse_rows.h"

#include <algorithm>
#include <type_traits>
#include <vector>

namespace kdops::cpu {
namespace {

// The forward walks one negative column j at a time over a tile of rows (the tile's scores stay
// in L1 while its columns are walked). The multi-negative form's strided loads stay scalar even
// in the ISA clones; the pairwise form's unit stride vectorises (kUnitStride below). Stores go
// through restrict-qualified function parameters only (GCC ignores restrict on local pointers):
// else a store could alias the scores and the compiler would reload them after each one.
constexpr int64_t kRowTile = 256;

// Sum and valid count of column j's terms over the rows [b0, b1); per_term[b * N + j] written
// when kPerTerm. Rows go round kLanes accumulators, summed in order at the end: independent
// chains (one chain of dependent float adds would cost an add's latency per term) that the
// compiler may also vectorise, and the same sum order whether it does or not. The accumulators
// are one vector of kLanes: as an array, GCC vectorises the row loop around them instead, with a
// lane permutation per load.
template <bool kMasked, bool kPerTerm, bool kUnitStride, typename scalar_t,
          typename acc_t = at::opmath_type<scalar_t>>
KDOPS_CPU_CLONES SumCount<acc_t> forward_column(const MarginMSEView<scalar_t>& view, int64_t j,
                                                int64_t b0, int64_t b1, scalar_t* __restrict per_term) {
  // kUnitStride (the pairwise form: N = 1, j = 0): a local copy whose strides are the constant 1,
  // so the compiler sees unit-stride loads across rows and vectorises them; with the strides read
  // at run time it runs them scalar.
  MarginMSEView<scalar_t> v = view;
  if constexpr (kUnitStride) v.pos_stride = v.neg_stride = 1, j = 0;
  constexpr int64_t kLanes = 8;
  typedef acc_t Lanes __attribute__((vector_size(kLanes * sizeof(acc_t))));
  Lanes lane_sum = {};
  int64_t count = kMasked ? 0 : b1 - b0;  // one counter: integer adds are exact in any order
  const auto term = [&](int64_t b) {
    const bool valid = !kMasked || v.valid(b, j);
    const acc_t r = v.template residual<acc_t>(b, j);
    const acc_t value = valid ? r * r : acc_t(0);
    if constexpr (kPerTerm) per_term[b * v.N + j] = static_cast<scalar_t>(value);
    if constexpr (kMasked) count += valid;
    return value;
  };
  int64_t b = b0;
  for (; b + kLanes <= b1; b += kLanes) {
    Lanes value;
    for (int64_t lane = 0; lane < kLanes; ++lane) value[lane] = term(b + lane);
    lane_sum += value;
  }
  for (int64_t lane = 0; b < b1; ++b, ++lane) lane_sum[lane] += term(b);
  SumCount<acc_t> total{acc_t(0), count};
  for (int64_t lane = 0; lane < kLanes; ++lane) total.sum += lane_sum[lane];
  return total;
}

// The ISA whose hand-vectorised rows (margin_mse_rows.h) run the multi-negative rows of this call:
// float scores, a reduced loss, more than one negative, and a CPU with AVX-512 or AVX2
// (cpu_isa()); masked calls run the AVX2 rows on AVX-512 CPUs too; generic: the loops below.
template <bool kMasked, bool kPerTerm, typename scalar_t>
CpuIsa vector_rows(const MarginMSEView<scalar_t>& v) {
#ifdef KDOPS_MARGIN_MSE_VECTOR_ROWS
  if constexpr (!kPerTerm && std::is_same_v<scalar_t, float>) {
    const CpuIsa isa = v.N > 1 ? cpu_isa() : CpuIsa::generic;
    return kMasked && isa == CpuIsa::avx512 ? CpuIsa::avx2 : isa;
  }
#endif
  return CpuIsa::generic;
}

// A term's cost forward and backward, for the parallel grain (parallel_grain): measured 1.3-2.4
// ns (B = 4096-65536, N = 8, one thread).
constexpr double kTermNs = 2;

// Sum and valid count of all terms: per chunk, tile by tile, column by column (or the vector
// rows, column sums then added in column order).
template <bool kMasked, bool kPerTerm, typename scalar_t>
SumCount<at::opmath_type<scalar_t>> forward_impl(const MarginMSEView<scalar_t>& v,
                                                 scalar_t* per_term) {
  using acc_t = at::opmath_type<scalar_t>;
  const CpuIsa isa = vector_rows<kMasked, kPerTerm>(v);
  // The pairwise form (hence N = 1), which takes no mask: its loop is the unmasked one, so a
  // masked instance compiles no unit-stride loop of its own.
  const bool unit_stride = !kMasked && v.pos_stride == 1 && v.neg_stride == 1;
  return deterministic_sum<SumCount<acc_t>>(v.B, kTermNs * static_cast<double>(v.N), [&](int64_t b0, int64_t b1) {
    SumCount<acc_t> total;
#ifdef KDOPS_MARGIN_MSE_VECTOR_ROWS
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (isa != CpuIsa::generic) {
        std::vector<float> column_sum((v.N + 15) / 16 * 16, 0.0f);
        if (isa == CpuIsa::avx512) {
          margin_mse_rows_forward_avx512(v.student_pos, v.teacher_pos, v.N, b0, b1, column_sum.data());
          total.count = (b1 - b0) * v.N;
        } else {
          total.count = margin_mse_rows_forward_avx2(v.student_pos, v.teacher_pos, v.mask, v.N, b0, b1,
                                                     column_sum.data());
        }
        for (int64_t j = 0; j < v.N; ++j) total.sum += column_sum[j];
        return total;
      }
    }
#endif
    for (int64_t t0 = b0; t0 < b1; t0 += kRowTile) {
      const int64_t t1 = std::min(b1, t0 + kRowTile);
      if (unit_stride) {
        total += forward_column<false, kPerTerm, true>(v, 0, t0, t1, per_term);
      } else {
        for (int64_t j = 0; j < v.N; ++j) total += forward_column<kMasked, kPerTerm, false>(v, j, t0, t1, per_term);
      }
    }
    return total;
  });
}

template <typename scalar_t>
SumCount<at::opmath_type<scalar_t>> forward_dispatch(const MarginMSEView<scalar_t>& v,
                                                     scalar_t* per_term) {
  const bool masked = v.mask != nullptr;
  if (per_term != nullptr) {
    return masked ? forward_impl<true, true>(v, per_term) : forward_impl<false, true>(v, per_term);
  }
  return masked ? forward_impl<true, false>(v, per_term) : forward_impl<false, false>(v, per_term);
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
    const auto total = forward_dispatch(v, out);
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

// The backward of the rows [b0, b1): d loss / d s_neg of term (b, j) into grad_neg[b * stride + j],
// their sum over j (d loss / d s_pos, in column order) into grad_pos[b * stride].
template <bool kMasked, bool kPerTerm, typename scalar_t, typename acc_t>
KDOPS_CPU_CLONES void backward_tile(const MarginMSEView<scalar_t>& v, int64_t b0, int64_t b1,
                                    const scalar_t* __restrict grad, acc_t shared,
                                    scalar_t* __restrict grad_pos, scalar_t* __restrict grad_neg,
                                    int64_t stride) {
  for (int64_t b = b0; b < b1; ++b) {
    acc_t pos = 0;
    for (int64_t j = 0; j < v.N; ++j) {
      const acc_t upstream = kPerTerm ? static_cast<acc_t>(grad[b * v.N + j]) : shared;
      acc_t d = margin_mse_term_grad(v.template residual<acc_t>(b, j), upstream);
      if constexpr (kMasked) d = v.valid(b, j) ? d : acc_t(0);
      grad_neg[b * stride + j] = static_cast<scalar_t>(-d);
      pos += d;
    }
    grad_pos[b * stride] = static_cast<scalar_t>(pos);
  }
}

// One negative per row (the pairwise form, or [B, 2] scores): vectorised across the rows [b0, b1).
template <bool kMasked, bool kPerTerm, typename scalar_t, typename acc_t>
KDOPS_CPU_CLONES void backward_pairs(const MarginMSEView<scalar_t>& v, int64_t b0, int64_t b1,
                           const scalar_t* __restrict grad, acc_t shared,
                           scalar_t* __restrict grad_pos, scalar_t* __restrict grad_neg,
                           int64_t stride) {
#pragma omp simd
  for (int64_t b = b0; b < b1; ++b) {
    const acc_t upstream = kPerTerm ? static_cast<acc_t>(grad[b]) : shared;
    acc_t d = margin_mse_term_grad(v.template residual<acc_t>(b, 0), upstream);
    if constexpr (kMasked) d = v.valid(b, 0) ? d : acc_t(0);
    grad_neg[b * stride] = static_cast<scalar_t>(-d);
    grad_pos[b * stride] = static_cast<scalar_t>(d);
  }
}

// The mask and the upstream's shape are template flags, so each loop is branch-free. In the
// multi-negative form grad_pos and grad_neg are the [B, 1+N] gradient (row stride `stride`,
// grad_neg = grad_pos + 1): disjoint elements.
template <bool kMasked, bool kPerTerm, typename scalar_t>
void backward_rows(const MarginMSEView<scalar_t>& v, const scalar_t* grad,
                   at::opmath_type<scalar_t> shared, scalar_t* grad_pos, scalar_t* grad_neg,
                   int64_t stride) {
  const CpuIsa isa = vector_rows<kMasked, kPerTerm>(v);
  at::parallel_for(0, v.B, parallel_grain(kTermNs * static_cast<double>(v.N)), [&](int64_t b0, int64_t b1) {
#ifdef KDOPS_MARGIN_MSE_VECTOR_ROWS
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (isa == CpuIsa::avx512) {  // grad_pos: the [B, 1+N] gradient's first column
        return margin_mse_rows_backward_avx512(v.student_pos, v.teacher_pos, v.N, b0, b1, shared, grad_pos);
      }
      if (isa == CpuIsa::avx2) {
        return margin_mse_rows_backward_avx2(v.student_pos, v.teacher_pos, v.mask, v.N, b0, b1, shared, grad_pos);
      }
    }
#endif
    if (v.N == 1) {
      return backward_pairs<kMasked, kPerTerm>(v, b0, b1, grad, shared, grad_pos, grad_neg, stride);
    }
    backward_tile<kMasked, kPerTerm>(v, b0, b1, grad, shared, grad_pos, grad_neg, stride);
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
