// Device helpers of the Plackett-Luce family's kernels, a block per row
// (plackett_luce_kernels.cu, listwise_kd_kernels.cu) and a warp per row
// (plackett_luce_warp_kernels.cu, listwise_kd_kernels.cu). Math: common/plackett_luce.h.
#pragma once

#include <cstdint>

#include "common/plackett_luce.h"
#include "common/reduction.h"
#include "cuda/block_reduce.cuh"
#include "cuda/grid_sum.cuh"
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

// A row's failed index checks, as the count finish_rows sums over the grid: the argument check
// in the low 32 bits, the permutation check in the high ones (fewer than 2^32 rows fail either).
constexpr long long kArgsBad = 1;
constexpr long long kRankingBad = 1LL << 32;

// What a row gives finish_rows, the same in every thread of the threads that computed it: its
// loss, its share of the temperatures' gradients (at the row's upstream gradient, row_upstream)
// and its failed checks (kArgsBad, kRankingBad).
template <typename acc_t>
struct RowResult {
  acc_t loss = 0;
  acc_t temperature_grad[2] = {0, 0};
  long long bad = 0;
};

// Whether a temperature read on the device is one the ops take: positive and finite (NaN fails).
__device__ inline bool temperature_ok(double t) { return t > 0 && t < -neg_inf<double>(); }

// Where a row's results go for 'none' (the loss in the scores' dtype, the temperatures' gradients
// in acc_t); the other reductions sum them in finish_rows.
template <typename scalar_t, typename acc_t>
__device__ void store_row(const RowsOut<scalar_t, acc_t>& o, Reduction reduction, int64_t b, const RowResult<acc_t>& r) {
  if (reduction != Reduction::None) return;
  if (o.loss != nullptr) o.loss[b] = static_cast<scalar_t>(r.loss);
  for (int k = 0; k < 2; ++k) {
    if (o.temperature_grad[k] != nullptr) o.temperature_grad[k][b] = r.temperature_grad[k];
  }
}

// The end of every PL-family kernel, called by every thread of every block (no thread may have
// returned): the thread's share of the block's rows, `share` (a row's RowResult from one thread of
// the threads that computed it, zeros from the others), summed over the grid in block order
// (grid_sum.cuh: deterministic); the last block writes the 'mean' / 'sum' loss and temperature
// gradients and the checks' flags of o. Mean of B rows: the losses' sum / B (the gradients are
// divided by B per row, in row_upstream). `temperatures`: the values the kernel read (checked
// where o asks).
template <int kThreads, typename scalar_t, typename acc_t>
__device__ void finish_rows(const RowsOut<scalar_t, acc_t>& o, Reduction reduction, int64_t B,
                            const RowResult<acc_t>& share, double first_temperature, double second_temperature) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (o.temperature_ok[0] != nullptr) *o.temperature_ok[0] = temperature_ok(first_temperature);
    if (o.temperature_ok[1] != nullptr) *o.temperature_ok[1] = temperature_ok(second_temperature);
  }
  const bool reduced = reduction != Reduction::None;
  const bool total_loss = reduced && o.loss != nullptr;
  const bool total_grads = reduced && (o.temperature_grad[0] != nullptr || o.temperature_grad[1] != nullptr);
  if (!total_loss && !total_grads && o.args_ok == nullptr && o.ranking_ok == nullptr) return;  // uniform
  acc_t sums[kRowSums] = {block_sum<kThreads>(share.loss), 0, 0};
  if (total_grads) {
    sums[1] = block_sum<kThreads>(share.temperature_grad[0]);
    sums[2] = block_sum<kThreads>(share.temperature_grad[1]);
  }
  long long count = block_sum<kThreads>(share.bad);
  if (!grid_sums<kThreads>(sums, count, o.partial_sums, o.partial_count, o.done) || threadIdx.x != 0) return;
  if (total_loss) *o.loss = static_cast<scalar_t>(reduction == Reduction::Mean ? sums[0] / static_cast<acc_t>(B) : sums[0]);
  for (int k = 0; k < 2; ++k) {
    if (total_grads && o.temperature_grad[k] != nullptr) *o.temperature_grad[k] = sums[1 + k];
  }
  if (o.args_ok != nullptr) *o.args_ok = (count & (kRankingBad - 1)) == 0;
  if (o.ranking_ok != nullptr) *o.ranking_ok = count < kRankingBad;
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

// The weights of c, PLD's temperature read where it is (device memory: by every thread, a
// broadcast load).
template <typename scalar_t, typename acc_t>
__device__ DeviceWeights<scalar_t, acc_t> device_weights(const PLRowsCall<scalar_t, acc_t>& c) {
  return {c.mode, c.values, static_cast<acc_t>(c.temperature.get()), acc_t(0), acc_t(0)};
}

}  // namespace kdops::cuda::plackett_luce
