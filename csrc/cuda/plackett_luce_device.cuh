// Device helpers of the Plackett-Luce family's kernels, a block per row
// (plackett_luce_kernels.cu, listwise_kd_kernels.cu) and a warp per row
// (plackett_luce_warp_kernels.cu, listwise_kd_kernels.cu). Math: common/plackett_luce.h.
#pragma once

#include <cstdint>

#include "common/plackett_luce.h"
#include "common/reduction.h"
#include "cuda/plackett_luce_kernels.h"

namespace kdops::cuda::plackett_luce {

struct LSEMerge {
  template <typename acc_t>
  __device__ LogSumExp<acc_t> operator()(const LogSumExp<acc_t>& a, const LogSumExp<acc_t>& b) const {
    return a.merged(b);
  }
};

// The union of two sets at temperature t (LogSumExp::merged_at).
template <typename acc_t>
struct LSEMergeAt {
  acc_t t;
  __device__ LogSumExp<acc_t> operator()(const LogSumExp<acc_t>& a, const LogSumExp<acc_t>& b) const {
    return a.merged_at(b, t);
  }
};

struct AffineThen {
  template <typename acc_t>
  __device__ Affine<acc_t> operator()(const Affine<acc_t>& a, const Affine<acc_t>& b) const {
    return a.then(b);
  }
};

// The upstream gradient of row b's loss: grad (a scalar, or [B] for 'none'), or 1 where grad is
// nullptr (the *_and_grads ops), divided by B for 'mean'.
template <typename scalar_t, typename acc_t>
__device__ acc_t row_upstream(const scalar_t* grad, Reduction reduction, int64_t b, int64_t B) {
  const acc_t g = grad == nullptr ? acc_t(1) : static_cast<acc_t>(grad[reduction == Reduction::None ? b : 0]);
  return reduction == Reduction::Mean ? g / static_cast<acc_t>(B > 0 ? B : 1) : g;
}

// Item pi[k] of a row of n items, clamped into [0, n): rankings the kernel does not check stay
// inside the row.
__device__ inline int64_t item_of(const int64_t* pi, int64_t k, int64_t n) {
  const int64_t i = pi[k];
  return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// One entry of a permutation check: whether pi[k] lies outside [0, len) or its item's bit in
// bitmap (zeroed words of the row) is already set, setting it (integer atomics: a repeated item
// finds its bit set, whichever thread comes first).
__device__ inline bool bad_ranking_entry(const int64_t* pi, int64_t k, int64_t len, unsigned int* bitmap) {
  const int64_t i = pi[k];
  if (i < 0 || i >= len) return true;
  const unsigned int bit = 1u << (i & 31);
  return (atomicOr(bitmap + (i >> 5), bit) & bit) != 0;
}

// Whether row b's user-given indices are in range: lengths[b] in [0, n], first[b] (PLD's target)
// in [0, n). The kernels read them clamped, so an unchecked value stays inside the row; the op
// asserts the flags on the device (plackett_luce_inputs.h).
template <typename scalar_t>
__device__ bool row_args_ok(const PLRowsView<scalar_t>& v, const int64_t* first, int64_t b) {
  const bool length_ok = v.lengths == nullptr || (v.lengths[b] >= 0 && v.lengths[b] <= v.n);
  const bool first_ok = first == nullptr || (first[b] >= 0 && first[b] < v.n);
  return length_ok && first_ok;
}

// w_k of a row: 1, weights[b, k], or softmax(teacher[b] / T)[pi_k] (PLD), given the row's
// tempered log-sum-exp of teacher[b] at T (set per row by set_row, from the kernel's block- or
// warp-wide LogSumExp::merged_at reduction): max and log of sum exp((t - max) / T).
template <typename scalar_t, typename acc_t>
struct DeviceWeights {
  WeightMode mode;
  const scalar_t* values;  // weights or teacher [B, n]
  acc_t t;                 // the temperature (PLD)
  acc_t max;
  acc_t log_sum;

  __device__ LogSumExp<acc_t> merged_item(const LogSumExp<acc_t>& l, int64_t b, int64_t n, int64_t i) const {
    return l.merged_at(LogSumExp<acc_t>::item(static_cast<acc_t>(values[b * n + i])), t);
  }
  __device__ void set_row(const LogSumExp<acc_t>& l) {
    max = softmax_max(l.max);
    log_sum = fast_log(l.sum);
  }

  __device__ acc_t at(int64_t b, int64_t n, int64_t k, int64_t item) const {
    if (mode == WeightMode::Unit) return 1;
    if (mode == WeightMode::Position) return static_cast<acc_t>(values[b * n + k]);
    return fast_exp(tempered(static_cast<acc_t>(values[b * n + item]), max, t) - log_sum);
  }
};

template <typename scalar_t, typename acc_t>
DeviceWeights<scalar_t, acc_t> device_weights(const PLRowsCall<scalar_t, acc_t>& c) {
  return {c.mode, c.values, static_cast<acc_t>(c.temperature), acc_t(0), acc_t(0)};
}

}  // namespace kdops::cuda::plackett_luce
