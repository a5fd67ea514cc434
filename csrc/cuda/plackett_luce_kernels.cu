// Plackett-Luce family CUDA kernels for rows longer than kMaxWarpRowItems (shorter rows:
// plackett_luce_warp_kernels.cu): one block per row, one launch per call. The ranking of ListMLE /
// PLD is sorted in the block's shared memory (bitonic sort of (image, index) keys, rows up to
// kMaxSortBytes of keys) at the start of the loss or gradient kernel or, for longer rows, by
// at::sort (in plackett_luce_cuda.cpp, the ops around these kernels) plus a kernel that moves
// PLD's true class to the front. The reversed log-sum-exp scan and the gradient's running C_j are
// block scans (block_scan.cuh) over tiles of the row with a carried prefix, so any row length
// works. The rows' losses and index checks are reduced over the grid at the kernel's end
// (finish_rows: in block order, no float atomics: deterministic). Math: common/plackett_luce.h,
// shared with the CPU kernels.
//
// The user's ranking of plackett_luce_loss is checked to be a permutation inside its forward
// kernel (a bitmap with integer atomicOr), whose flag a device-side assert reads (no host sync).
// The backward ops and the ListMLE / PLD forwards do not re-check (their rankings come from a
// forward or the kernel's own sort): they clamp every ranking entry into the row (item_of), so a
// ranking that is not a permutation gives an unspecified result, never an access out of bounds.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/block_reduce.cuh"
#include "cuda/block_scan.cuh"
#include "cuda/launch.cuh"
#include "cuda/plackett_luce_device.cuh"
#include "sim/portable.h"

namespace kdops::cuda::plackett_luce {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxSortBytes = 32 * 1024;  // shared memory for the in-block sort

// --- rankings ---------------------------------------------------------------------------------

// Block-wide: ranking[b] = the row's len items by descending key (ties to the lower index),
// first[b] (if given) forced to the front, padding columns after them in index order. In-block
// bitonic sort of `sorted` (a power of two >= n) keys in the dynamic shared memory; the ranking
// is visible to the whole block on return.
template <typename scalar_t, typename acc_t>
__device__ void block_rank_row(const scalar_t* keys, const int64_t* lengths, const int64_t* first, int64_t n,
                               int64_t sorted, int64_t b, int64_t* ranking) {
  using K = RankKeyOf<acc_t>;
  using key_t = typename K::type;
  KDOPS_DYNAMIC_SMEM(unsigned char, smem);
  key_t* s = reinterpret_cast<key_t*>(smem);
  const int64_t given = lengths == nullptr ? n : lengths[b];
  const int64_t len = given < 0 ? 0 : (given > n ? n : given);  // clamped, as PLRowsView::length
  const int64_t forced = first == nullptr ? -1 : first[b];
  for (int64_t i = threadIdx.x; i < sorted; i += kThreads) {
    s[i] = i >= len ? K::padding(i)
                    : (i == forced ? K::first(i) : K::make(static_cast<acc_t>(keys[b * n + i]), i));
  }
  __syncthreads();
  for (int64_t k = 2; k <= sorted; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      for (int64_t i = threadIdx.x; i < sorted; i += kThreads) {
        const int64_t partner = i ^ j;
        if (partner > i) {
          const key_t lo = s[i], hi = s[partner];
          const bool ascending = (i & k) == 0;
          if (ascending ? hi < lo : lo < hi) {
            s[i] = hi;
            s[partner] = lo;
          }
        }
      }
      __syncthreads();
    }
  }
  for (int64_t i = threadIdx.x; i < n; i += kThreads) ranking[b * n + i] = K::index(s[i]);
  __syncthreads();  // the ranking row, written by every thread, read by every thread next
}

// Long rows: order[b] is the row sorted by at::sort; PLD's true class moves to the front. A
// class outside [0, n) (refused by the asynchronous target check) moves nothing.
__global__ void __launch_bounds__(kThreads)
    move_to_front_kernel(const int64_t* order, const int64_t* first, int64_t n, int64_t* ranking) {
  alignas(8) __shared__ int64_t position;
  const int64_t b = blockIdx.x, forced = first[b];
  const bool in_row = forced >= 0 && forced < n;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    if (in_row && order[b * n + i] == forced) position = i;  // exactly one i matches
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    ranking[b * n + i] = !in_row ? order[b * n + i]
                                 : (i == 0 ? forced
                                           : (i <= position ? order[b * n + i - 1] : order[b * n + i]));
  }
}

// The in-block sort's size: the power of two >= n.
int64_t shared_sort_items(int64_t n) {
  int64_t sorted = 1;
  while (sorted < n) sorted <<= 1;
  return sorted;
}

// --- the weighted PL kernels ------------------------------------------------------------------

// Block-wide (call from every thread at the start of row b): PLD's softmax of teacher[b] at T
// (DeviceWeights::set_row).
template <typename scalar_t, typename acc_t>
__device__ void block_teacher_lse(DeviceWeights<scalar_t, acc_t>& w, int64_t b, int64_t n) {
  if (w.mode != WeightMode::Teacher) return;
  LogSumExp<acc_t> local;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) local = w.merged_item(local, b, n, i);
  w.set_row(block_all_reduce<kThreads>(local, LSEMergeAt<acc_t>{w.t}));
}

// Block-wide: whether ranking row pi[0..len) is a permutation of 0..len-1 (bitmap: the row's
// `words` words, zeroed here: no memset before the launch).
__device__ bool is_permutation(const int64_t* pi, int64_t len, unsigned int* bitmap, int64_t words) {
  for (int64_t i = threadIdx.x; i < words; i += kThreads) bitmap[i] = 0;
  __syncthreads();
  bool bad = false;
  for (int64_t k = threadIdx.x; k < len; k += kThreads) bad |= bad_ranking_entry(pi, k, len, bitmap);
  return !__syncthreads_or(bad);
}

// Block-wide, at the start of row b: its argument flags, and its ranking sorted from c.keys when
// `sorted` (> 0: block_rank_row's key count) is given.
template <typename scalar_t, typename acc_t>
__device__ long long start_row(const PLRowsCall<scalar_t, acc_t>& c, int64_t sorted, int64_t b) {
  if (sorted > 0) block_rank_row<scalar_t, acc_t>(c.keys, c.v.lengths, c.first, c.v.n, sorted, b, c.ranking);
  return c.out.args_ok != nullptr && !row_args_ok(c.v, c.first, b) ? kArgsBad : 0;
}

// The reversed scan: calls visit(k, x_k, lse_k) for every position k < len of the row, tile by
// tile from the end (lse_k = log sum_{j >= k} exp(x_j), x_j = s[pi_j]).
template <typename acc_t, typename scalar_t, typename Visit>
__device__ void suffix_scan(const scalar_t* s, const int64_t* pi, int64_t n, int64_t len, Visit visit) {
  LogSumExp<acc_t> carry;  // the positions after this tile (the empty set at first)
  for (int64_t base = 0; base < len; base += kThreads) {
    const int64_t k = len - 1 - (base + threadIdx.x);  // thread order = descending positions
    const acc_t x = k >= 0 ? static_cast<acc_t>(s[item_of(pi, k, n)]) : acc_t(0);
    LogSumExp<acc_t> state = k >= 0 ? LogSumExp<acc_t>::item(x) : LogSumExp<acc_t>();
    state = block_inclusive_scan<kThreads>(state, LSEMerge(), carry);
    if (k >= 0) visit(k, x, state.value());
  }
}

// Per row: loss_b = sum_{k<K} w_k (lse_k - s[pi_k]), of the ranking in c.ranking (checked to be
// a permutation where c.out.ranking_ok is given).
template <typename scalar_t, typename acc_t>
__device__ RowResult<acc_t> pl_forward_row(const PLRowsCall<scalar_t, acc_t>& c, DeviceWeights<scalar_t, acc_t> w,
                                           unsigned int* bitmap, int64_t sorted, int64_t b) {
  const PLRowsView<scalar_t>& v = c.v;
  const int64_t len = v.length(b), K = v.terms(b);
  const int64_t* pi = c.ranking + b * v.n;
  const int64_t words = (v.n + 31) / 32;
  RowResult<acc_t> result;
  result.bad = start_row(c, sorted, b);
  if (c.out.ranking_ok != nullptr && !is_permutation(pi, len, bitmap + b * words, words)) {
    result.bad |= kRankingBad;
    return result;
  }
  block_teacher_lse(w, b, v.n);
  acc_t local = 0;
  suffix_scan<acc_t>(v.row(b), pi, v.n, len, [&](int64_t k, acc_t x, acc_t lse) {
    if (k < K) local += w.at(b, v.n, k, item_of(pi, k, v.n)) * (lse - x);
  });
  result.loss = block_sum<kThreads>(local);
  return result;
}

// Per row: grad_scores[pi_j] = g (C_j p_j - w_j [j<K]), C_j = C_{j-1} (1 - p_{j-1}) + w_j [j<K]
// as an affine scan; grad_weights[k] = g (lse_k - x_k) for k < K; PLD's teacher gradient
// g w_k (term_k - loss_b) / T; the row's loss (the same sum as pl_forward_row's). lse: scratch
// [B, n].
template <typename scalar_t, typename acc_t>
__device__ RowResult<acc_t> pl_backward_row(const PLRowsCall<scalar_t, acc_t>& c, DeviceWeights<scalar_t, acc_t> w,
                                            acc_t* lse_scratch, int64_t sorted, int64_t b) {
  const PLRowsView<scalar_t>& v = c.v;
  const int64_t n = v.n, len = v.length(b), K = v.terms(b);
  const int64_t* pi = c.ranking + b * n;
  RowResult<acc_t> result;
  result.bad = start_row(c, sorted, b);
  block_teacher_lse(w, b, n);
  const acc_t g = row_upstream<scalar_t, acc_t>(c.grad, c.reduction, b, v.B);
  const scalar_t* s = v.row(b);
  scalar_t* grad_scores = c.grad_scores + b * n;
  acc_t* lse = lse_scratch + b * n;
  acc_t local_loss = 0;
  suffix_scan<acc_t>(s, pi, n, len, [&](int64_t k, acc_t x, acc_t lse_k) {
    lse[k] = lse_k;
    if (k < K) {
      const acc_t term = lse_k - x;
      if (c.grad_weights != nullptr) c.grad_weights[b * n + k] = static_cast<scalar_t>(g * term);
      local_loss += w.at(b, n, k, item_of(pi, k, n)) * term;
    }
  });
  __syncthreads();  // lse visible to the whole block
  Affine<acc_t> carry;  // the composition of the positions before this tile (the identity at first)
  for (int64_t base = 0; base < len; base += kThreads) {
    const int64_t j = base + threadIdx.x;
    Affine<acc_t> map;
    acc_t wj = 0, p = 0;
    const int64_t item = j < len ? item_of(pi, j, n) : 0;
    if (j < len) {
      wj = j < K ? w.at(b, n, j, item) : acc_t(0);
      const acc_t q_prev = j == 0 ? acc_t(0) : fast_exp(shifted(lse[j], lse[j - 1]));
      map = {q_prev, wj};
      p = fast_exp(shifted(static_cast<acc_t>(s[item]), lse[j]));
    }
    map = block_inclusive_scan<kThreads>(map, AffineThen(), carry);
    if (j < len) grad_scores[item] = static_cast<scalar_t>(g * pl_score_grad(map.b, p, wj));
  }
  for (int64_t i = len + threadIdx.x; i < n; i += kThreads) grad_scores[i] = scalar_t(0);
  if (c.grad_weights != nullptr) {
    for (int64_t k = K + threadIdx.x; k < n; k += kThreads) c.grad_weights[b * n + k] = scalar_t(0);
  }
  const bool teacher_side = c.grad_teacher != nullptr || c.out.temperature_grad[0] != nullptr;  // PLD's
  if (!teacher_side && c.out.loss == nullptr) return result;
  result.loss = block_sum<kThreads>(local_loss);
  if (!teacher_side) return result;
  // PLD (every position a term): d loss / d t_c = w_c (term_c - loss) / T; and its T's share.
  acc_t teacher_dot = 0;
  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    const int64_t item = item_of(pi, k, n);
    const acc_t term = lse[k] - static_cast<acc_t>(s[item]);
    const acc_t gt = pld_teacher_grad_of(g, w.at(b, n, k, item), term, result.loss, w.t);
    if (c.grad_teacher != nullptr) c.grad_teacher[b * n + item] = static_cast<scalar_t>(gt);
    teacher_dot += temperature_dot_term(static_cast<acc_t>(c.values[b * n + item]), w.max, gt);
  }
  if (c.out.temperature_grad[0] != nullptr) {
    result.temperature_grad[0] = logits_temperature_grad(block_sum<kThreads>(teacher_dot), w.t);
  }
  return result;
}

// A block per row (rows ranked in the kernel when sorted > 0), then the grid's rows reduced.
template <typename scalar_t, typename acc_t, typename Row>
__device__ void block_rows(const PLRowsCall<scalar_t, acc_t>& c, Row row) {
  RowResult<acc_t> share;  // thread 0's
  const RowResult<acc_t> result = row(device_weights(c), int64_t(blockIdx.x));
  if (threadIdx.x == 0) {
    store_row(c.out, c.reduction, blockIdx.x, result);
    share = result;
  }
  finish_rows<kThreads>(c.out, c.reduction, c.v.B, share, c.temperature.get(), 1.0);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    pl_forward_kernel(PLRowsCall<scalar_t, acc_t> c, unsigned int* bitmap, int64_t sorted) {
  block_rows(c, [&](DeviceWeights<scalar_t, acc_t> w, int64_t b) { return pl_forward_row(c, w, bitmap, sorted, b); });
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    pl_backward_kernel(PLRowsCall<scalar_t, acc_t> c, acc_t* lse_scratch, int64_t sorted) {
  block_rows(c, [&](DeviceWeights<scalar_t, acc_t> w, int64_t b) { return pl_backward_row(c, w, lse_scratch, sorted, b); });
}

// The keys the kernel sorts for c (0: it sorts none), and their shared memory.
template <typename scalar_t, typename acc_t>
int64_t sorted_keys(const PLRowsCall<scalar_t, acc_t>& c) {
  return c.keys == nullptr ? 0 : shared_sort_items(c.v.n);
}
template <typename acc_t>
int64_t sort_bytes(int64_t sorted) {
  return sorted * int64_t(sizeof(typename RankKeyOf<acc_t>::type));
}

}  // namespace

template <typename scalar_t, typename acc_t>
bool ranks_in_block(const PLRowsCall<scalar_t, acc_t>& c) {
  return sort_bytes<acc_t>(shared_sort_items(c.v.n)) <= kMaxSortBytes;
}

void move_to_front(const int64_t* order, const int64_t* first, int64_t B, int64_t n, int64_t* ranking,
                   LaunchTarget on) {
  launch(move_to_front_kernel, B, kThreads, 0, on.stream, order, first, n, ranking);
}

template <typename scalar_t, typename acc_t>
void forward(const PLRowsCall<scalar_t, acc_t>& c, unsigned int* bitmap, LaunchTarget on) {
  const int64_t sorted = sorted_keys(c);
  launch(pl_forward_kernel<scalar_t, acc_t>, c.v.B, kThreads, sort_bytes<acc_t>(sorted), on.stream, c, bitmap,
         sorted);
}

template <typename scalar_t, typename acc_t>
void backward(const PLRowsCall<scalar_t, acc_t>& c, acc_t* lse_scratch, LaunchTarget on) {
  const int64_t sorted = sorted_keys(c);
  launch(pl_backward_kernel<scalar_t, acc_t>, c.v.B, kThreads, sort_bytes<acc_t>(sorted), on.stream, c,
         lse_scratch, sorted);
}

#define KDOPS_INSTANTIATE(scalar_t, acc_t)                                                              \
  template bool ranks_in_block<scalar_t, acc_t>(const PLRowsCall<scalar_t, acc_t>&);                   \
  template void forward<scalar_t, acc_t>(const PLRowsCall<scalar_t, acc_t>&, unsigned int*, LaunchTarget); \
  template void backward<scalar_t, acc_t>(const PLRowsCall<scalar_t, acc_t>&, acc_t*, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE)
#undef KDOPS_INSTANTIATE

}  // namespace kdops::cuda::plackett_luce
