// Plackett-Luce family, rows of at most kMaxWarpRowItems items: one warp per row (8 rows per
// 256-thread block), the whole row in the warp's registers in warp_sort.cuh's blocked layout
// (lane l holds positions l * kItems ..). One kernel does what a call asks for, in one launch:
// the ranking (ListMLE's, PLD's: sorted in registers, warp_sort.cuh), or the given one read and,
// for plackett_luce_loss's forward, checked to be a permutation; the reversed log-sum-exp scan and
// the row's loss; the gradient's affine scan of C_j and the gradients; and, at the end, the
// losses and the checks reduced over the grid (finish_rows). A block per row, as for
// longer rows (plackett_luce_kernels.cu), left 3 of 4 warps idle on a 64-item ListMLE row and
// needed a second launch and a global scratch row between the scans. Math: common/plackett_luce.h.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/block_reduce.cuh"
#include "cuda/launch.cuh"
#include "cuda/plackett_luce_device.cuh"
#include "cuda/warp_scan.cuh"
#include "cuda/warp_sort.cuh"

namespace kdops::cuda::plackett_luce {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarpSize;
static_assert(kRowsPerBlock == kRowsPerWarpBlock, "row_blocks sizes the grid sum's scratch by it");
constexpr int kBitmapWords = static_cast<int>(kMaxWarpRowItems / 32);

// Warp-wide: whether the given ranking row pi[0..len) is a permutation of 0..len-1 (a bitmap in
// the warp's shared words).
template <int kItems>
__device__ bool warp_is_permutation(const int64_t* pi, int64_t len, unsigned int* bitmap) {
  const int lane = threadIdx.x % kWarpSize;
  if (lane < kBitmapWords) bitmap[lane] = 0;
  __syncwarp();
  bool bad = false;
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t k = lane * kItems + t;
    if (k < len) bad |= bad_ranking_entry(pi, k, len, bitmap);
  }
  return !__any_sync(kFullWarp, bad);
}

// Warp-wide: row b, everything c asks for.
template <typename scalar_t, typename acc_t, int kItems>
__device__ RowResult<acc_t> warp_pl_row(const PLRowsCall<scalar_t, acc_t>& c, DeviceWeights<scalar_t, acc_t> w,
                                        int64_t b, unsigned int* bitmap) {
  using K = RankKeyOf<acc_t>;
  using key_t = typename K::type;
  const int lane = threadIdx.x % kWarpSize;
  RowResult<acc_t> result;
  if (c.out.args_ok != nullptr && !row_args_ok(c.v, c.first, b)) result.bad = kArgsBad;
  const int64_t n = c.v.n, len = c.v.length(b), terms = c.v.terms(b);
  int64_t* pi = c.ranking + b * n;

  // item[t]: the item at position k = lane * kItems + t (k < n).
  int64_t item[kItems];
  if (c.keys != nullptr) {
    const int64_t forced = c.first == nullptr ? -1 : c.first[b];
    key_t key[kItems];
#pragma unroll
    for (int t = 0; t < kItems; ++t) {
      const int64_t i = lane * kItems + t;
      key[t] = i >= len ? K::padding(i)
                        : (i == forced ? K::first(i) : K::make(static_cast<acc_t>(c.keys[b * n + i]), i));
    }
    warp_bitonic_sort<kItems>(key);  // keys are distinct: the order is the block sort's
#pragma unroll
    for (int t = 0; t < kItems; ++t) {
      const int64_t k = lane * kItems + t;
      item[t] = K::index(key[t]);
      if (k < n) pi[k] = item[t];
    }
  } else {
    if (c.out.ranking_ok != nullptr && !warp_is_permutation<kItems>(pi, len, bitmap)) {
      result.bad |= kRankingBad;
      return result;  // the whole warp; the op's device-side assert fails the call
    }
#pragma unroll
    for (int t = 0; t < kItems; ++t) {
      const int64_t k = lane * kItems + t;
      item[t] = k < n ? item_of(pi, k, n) : 0;
    }
  }

  if (w.mode == WeightMode::Teacher) {  // PLD: the softmax of teacher[b] at T over the row's classes
    LogSumExp<acc_t> local;
#pragma unroll
    for (int t = 0; t < kItems; ++t) {
      const int64_t i = lane * kItems + t;
      if (i < n) local = w.merged_item(local, b, n, i);
    }
    w.set_row(warp_all_reduce(local, LSEMergeAt<acc_t>{w.t}));
  }

  // x_k = s[pi_k], lse_k = log sum_{j >= k} exp(x_j) (a suffix scan), w_k, and the row's loss.
  const scalar_t* s = c.v.row(b);
  acc_t x[kItems], lse[kItems], wk[kItems];
  LogSumExp<acc_t> suffix[kItems];
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t k = lane * kItems + t;
    x[t] = k < len ? static_cast<acc_t>(s[item[t]]) : acc_t(0);
    suffix[t] = k < len ? LogSumExp<acc_t>::item(x[t]) : LogSumExp<acc_t>();
  }
  warp_suffix_scan<kItems>(suffix, LSEMerge());
  acc_t local = 0;
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t k = lane * kItems + t;
    lse[t] = suffix[t].value();
    wk[t] = k < terms ? w.at(b, n, k, item[t]) : acc_t(0);
    if (k < terms) local += wk[t] * (lse[t] - x[t]);
  }
  const acc_t loss = warp_all_reduce(local, SumOp());
  result.loss = loss;
  if (c.grad_scores == nullptr) return result;

  // grad s[pi_j] = g (C_j p_j - w_j [j<K]), C_j = C_{j-1} (1 - p_{j-1}) + w_j [j<K]: C_j is the
  // b of the maps {a: 1 - p_{j-1} = exp(lse_j - lse_{j-1}), b: w_j} composed in position order.
  const acc_t g = row_upstream<scalar_t, acc_t>(c.grad, c.reduction, b, c.v.B);
  const acc_t lse_before = shfl_up(lse[kItems - 1], 1);  // position lane * kItems - 1
  Affine<acc_t> map[kItems];
  acc_t p[kItems];
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t k = lane * kItems + t;
    p[t] = 0;
    if (k < len) {
      const acc_t lse_prev = t == 0 ? lse_before : lse[t - 1];
      map[t] = {k == 0 ? acc_t(0) : fast_exp(shifted(lse[t], lse_prev)), wk[t]};
      p[t] = fast_exp(shifted(x[t], lse[t]));
    }
  }
  warp_inclusive_scan<kItems>(map, AffineThen());
  scalar_t* grad_scores = c.grad_scores + b * n;
  const bool temperature_grad = c.out.temperature_grad[0] != nullptr;  // PLD's T
  acc_t teacher_dot = 0;  // sum_c (t_c - max) d loss / d t_c over the row's classes
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t k = lane * kItems + t;
    if (k < len) grad_scores[item[t]] = static_cast<scalar_t>(g * pl_score_grad(map[t].b, p[t], wk[t]));
    if (k >= len && k < n) grad_scores[k] = scalar_t(0);  // the padding items (k as an item)
    if (c.grad_weights != nullptr && k < n) {
      c.grad_weights[b * n + k] = static_cast<scalar_t>(k < terms ? g * (lse[t] - x[t]) : acc_t(0));
    }
    // PLD (every position a term): d loss / d t_c = w_c (term_c - loss) / T.
    if ((c.grad_teacher != nullptr || temperature_grad) && k < n) {
      const acc_t gt = pld_teacher_grad_of(g, wk[t], lse[t] - x[t], loss, w.t);
      if (c.grad_teacher != nullptr) c.grad_teacher[b * n + item[t]] = static_cast<scalar_t>(gt);
      teacher_dot += temperature_dot_term(static_cast<acc_t>(c.values[b * n + item[t]]), w.max, gt);
    }
  }
  if (temperature_grad) result.temperature_grad[0] = logits_temperature_grad(warp_all_reduce(teacher_dot, SumOp()), w.t);
  return result;
}

// A warp per row; the block's rows and the grid's reduced at the end (finish_rows).
template <typename scalar_t, typename acc_t, int kItems>
__global__ void __launch_bounds__(kThreads) warp_pl_rows_kernel(PLRowsCall<scalar_t, acc_t> c) {
  __shared__ unsigned int bitmaps[kRowsPerBlock][kBitmapWords];
  const DeviceWeights<scalar_t, acc_t> w = device_weights(c);
  const int64_t b = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  const bool lane0 = threadIdx.x % kWarpSize == 0;
  RowResult<acc_t> share;  // lane 0's row; a warp past the last row adds nothing
  if (b < c.v.B) {
    const RowResult<acc_t> row = warp_pl_row<scalar_t, acc_t, kItems>(c, w, b, bitmaps[threadIdx.x / kWarpSize]);
    if (lane0) {
      store_row(c.out, c.reduction, b, row);
      share = row;
    }
  }
  finish_rows<kThreads>(c.out, c.reduction, c.v.B, share, c.temperature.get(), 1.0);
}

}  // namespace

template <typename scalar_t, typename acc_t>
void warp_rows(const PLRowsCall<scalar_t, acc_t>& c, LaunchTarget on) {
  const int64_t blocks = (c.v.B + kRowsPerBlock - 1) / kRowsPerBlock;
  const auto run = [&](auto kernel) { launch(kernel, blocks, kThreads, 0, on.stream, c); };
  const int64_t n = c.v.n;
  if (n <= kWarpSize) run(warp_pl_rows_kernel<scalar_t, acc_t, 1>);
  else if (n <= 2 * kWarpSize) run(warp_pl_rows_kernel<scalar_t, acc_t, 2>);
  else if (n <= 4 * kWarpSize) run(warp_pl_rows_kernel<scalar_t, acc_t, 4>);
  else run(warp_pl_rows_kernel<scalar_t, acc_t, 8>);
}

static_assert(kMaxWarpRowItems == 8 * kWarpSize, "warp_rows: at most 8 positions a lane");

#define KDOPS_INSTANTIATE(scalar_t, acc_t) \
  template void warp_rows<scalar_t, acc_t>(const PLRowsCall<scalar_t, acc_t>&, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE)
#undef KDOPS_INSTANTIATE

}  // namespace kdops::cuda::plackett_luce
