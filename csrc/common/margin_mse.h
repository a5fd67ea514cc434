// Margin-MSE (Hofstaetter et al. 2020): loss_ij = ((s_i0 - s_ij) - (t_i0 - t_ij))^2.
//
// One view serves both public forms: the pairwise form (four [B] tensors, N = 1) and the
// multi-negative form ([B, 1+N] student and teacher, column 0 the positive). Each term (b, j)
// reads the positive through `*_pos` and negative j through `*_neg`; a term is valid when the
// row's positive and negative j are both unmasked.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace kdops {

template <typename scalar_t>
struct MarginMSEView {
  const scalar_t* student_pos;  // [B], stride pos_stride
  const scalar_t* student_neg;  // [B, N], row stride neg_stride, unit column stride
  const scalar_t* teacher_pos;
  const scalar_t* teacher_neg;
  const bool* mask;  // [B, 1+N] contiguous or nullptr
  int64_t B;
  int64_t N;
  int64_t pos_stride;
  int64_t neg_stride;

  KDOPS_HD bool valid(int64_t b, int64_t j) const {
    return mask == nullptr || (mask[b * (N + 1)] && mask[b * (N + 1) + 1 + j]);
  }

  // r_bj = (sp_b - sn_bj) - (tp_b - tn_bj); the loss term is r^2 and
  // d r^2 / d sp = 2r, d / d sn = -2r, d / d tp = -2r, d / d tn = 2r.
  template <typename acc_t>
  KDOPS_HD acc_t residual(int64_t b, int64_t j) const {
    const acc_t sp = static_cast<acc_t>(student_pos[b * pos_stride]);
    const acc_t tp = static_cast<acc_t>(teacher_pos[b * pos_stride]);
    const acc_t sn = static_cast<acc_t>(student_neg[b * neg_stride + j]);
    const acc_t tn = static_cast<acc_t>(teacher_neg[b * neg_stride + j]);
    return (sp - sn) - (tp - tn);
  }
};

// Running (sum of terms, number of valid terms): the accumulator of the reduced forward.
template <typename acc_t>
struct SumCount {
  acc_t sum{};
  int64_t count{};
  KDOPS_HD SumCount& operator+=(const SumCount& o) {
    sum += o.sum;
    count += o.count;
    return *this;
  }
};

// Weight of term (b, j) in the loss's gradient: 0 for a masked term, else the upstream
// gradient (per term for reduction='none', shared for 'sum', divided by the count for 'mean').
template <typename acc_t>
KDOPS_HD acc_t margin_mse_term_grad(acc_t residual, acc_t upstream) {
  return acc_t(2) * residual * upstream;
}

}  // namespace kdops
