// Plackett-Luce family CUDA kernels: one block per row. The ranking of ListMLE / PLD is sorted by
// one warp per row in registers for rows up to kMaxWarpSortItems, else in
// shared memory (bitonic sort of (image, index) keys, rows up to kMaxSortBytes of keys) or, for
// longer rows, by at::sort (in plackett_luce_cuda.cpp, the ops around these kernels) plus a
// kernel that moves PLD's true class to the front. The reversed
// log-sum-exp scan and the gradient's running C_j are block scans (block_scan.cuh) over tiles of
// the row with a carried prefix, so any row length works. Per-row losses are reduced with at::sum (no float
// atomics: deterministic). Math: common/plackett_luce.h, shared with the CPU kernels.
//
// The user's ranking of plackett_luce_loss is checked to be a permutation inside its forward
// kernel (a bitmap with integer atomicOr), which writes a flag per row that a device-side assert
// reads (no host sync). The backward ops and the ListMLE / PLD forwards do not re-check (their
// rankings come from a forward): they clamp every ranking entry into the row (item_of), so a
// ranking that is not a permutation gives an unspecified result, never an access out of bounds.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/block_reduce.cuh"
#include "cuda/block_scan.cuh"
#include "cuda/launch.cuh"
#include "cuda/plackett_luce_kernels.h"
#include "cuda/warp_sort.cuh"
#include "sim/portable.h"

namespace kdops::cuda::plackett_luce {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxSortBytes = 32 * 1024;  // shared memory for the in-block sort

// --- block-wide helpers -----------------------------------------------------------------------

struct LSEMerge {
  template <typename acc_t>
  __device__ LogSumExp<acc_t> operator()(const LogSumExp<acc_t>& a, const LogSumExp<acc_t>& b) const {
    return a.merged(b);
  }
};

struct AffineThen {
  template <typename acc_t>
  __device__ Affine<acc_t> operator()(const Affine<acc_t>& a, const Affine<acc_t>& b) const {
    return a.then(b);
  }
};

// The upstream gradient of row b's loss.
template <typename scalar_t, typename acc_t>
__device__ acc_t row_upstream(const scalar_t* grad, Reduction reduction, int64_t b, int64_t B) {
  if (reduction == Reduction::None) return static_cast<acc_t>(grad[b]);
  const acc_t g = static_cast<acc_t>(grad[0]);
  return reduction == Reduction::Mean ? g / static_cast<acc_t>(B > 0 ? B : 1) : g;
}

// Item pi[k] of a row of n items, clamped into [0, n): rankings the kernel does not check stay
// inside the row.
__device__ inline int64_t item_of(const int64_t* pi, int64_t k, int64_t n) {
  const int64_t i = pi[k];
  return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// --- rankings ---------------------------------------------------------------------------------

// ranking[b] = the row's len items by descending key (ties to the lower index), first[b] (if
// given) forced to the front, padding columns after them in index order. In-block bitonic sort
// of `sorted` (a power of two >= n) keys in shared memory.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    rank_rows_kernel(const scalar_t* keys, const int64_t* lengths, const int64_t* first, int64_t n,
                     int64_t sorted, int64_t* ranking) {
  using K = RankKeyOf<acc_t>;
  using key_t = typename K::type;
  KDOPS_DYNAMIC_SMEM(unsigned char, smem);
  key_t* s = reinterpret_cast<key_t*>(smem);
  const int64_t b = blockIdx.x;
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
}

// Rows of at most kMaxWarpSortItems: the same ranking as rank_rows_kernel, one warp per row
// (kThreads / 32 rows per block), the row's 32 * kItems keys sorted in registers
// (warp_sort.cuh) instead of by a whole block in shared memory, where a row of 64 items left
// 3 of 4 threads idle. The keys are distinct, so the order is rank_rows_kernel's.
constexpr int kRowsPerWarpBlock = kThreads / kWarpSize;
constexpr int64_t kMaxWarpSortItems = kWarpSize * 8;

template <typename scalar_t, typename acc_t, int kItems>
__global__ void __launch_bounds__(kThreads)
    warp_rank_rows_kernel(const scalar_t* keys, const int64_t* lengths, const int64_t* first,
                          int64_t B, int64_t n, int64_t* ranking) {
  using K = RankKeyOf<acc_t>;
  using key_t = typename K::type;
  const int64_t b = int64_t(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const bool row = b < B;  // a warp past the last row sorts padding: every lane must shuffle
  const int64_t given = !row ? 0 : (lengths == nullptr ? n : lengths[b]);
  const int64_t len = given < 0 ? 0 : (given > n ? n : given);  // clamped, as PLRowsView::length
  const int64_t forced = !row || first == nullptr ? -1 : first[b];
  key_t v[kItems];
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t i = lane * kItems + t;
    v[t] = i >= len ? K::padding(i)
                    : (i == forced ? K::first(i) : K::make(static_cast<acc_t>(keys[b * n + i]), i));
  }
  warp_bitonic_sort<kItems>(v);
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t i = lane * kItems + t;
    if (row && i < n) ranking[b * n + i] = K::index(v[t]);
  }
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

// w_k of a row: 1, weights[b, k], or softmax(teacher[b] / T)[pi_k] (PLD).
template <typename scalar_t, typename acc_t>
struct DeviceWeights {
  WeightMode mode;
  const scalar_t* values;  // weights or teacher [B, n]
  acc_t inv_t;
  acc_t lse_t;  // PLD: log sum exp(teacher[b] / T), set by prepare

  // Block-wide: call from every thread at the start of row b.
  __device__ void prepare(int64_t b, int64_t n) {
    if (mode != WeightMode::Teacher) return;
    LogSumExp<acc_t> local;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      local = local.merged(LogSumExp<acc_t>::item(static_cast<acc_t>(values[b * n + i]) * inv_t));
    }
    lse_t = block_all_reduce<kThreads>(local, LSEMerge()).value();
  }
  __device__ acc_t at(int64_t b, int64_t n, int64_t k, int64_t item) const {
    if (mode == WeightMode::Unit) return 1;
    if (mode == WeightMode::Position) return static_cast<acc_t>(values[b * n + k]);
    return fast_exp(static_cast<acc_t>(values[b * n + item]) * inv_t - lse_t);
  }
};

template <typename scalar_t, typename acc_t>
DeviceWeights<scalar_t, acc_t> device_weights(WeightMode mode, const scalar_t* values, double temperature) {
  return {mode, values, static_cast<acc_t>(1.0 / temperature), acc_t(0)};
}

// Block-wide: whether ranking row pi[0..len) is a permutation of 0..len-1 (bitmap: the row's
// zeroed words); written to *row_ok.
__device__ bool check_permutation(const int64_t* pi, int64_t len, unsigned int* bitmap, bool* row_ok) {
  bool bad = false;
  for (int64_t k = threadIdx.x; k < len; k += kThreads) {
    const int64_t i = pi[k];
    if (i < 0 || i >= len) {
      bad = true;
    } else {
      const unsigned int bit = 1u << (i & 31);
      bad |= (atomicOr(bitmap + (i >> 5), bit) & bit) != 0;
    }
  }
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) *row_ok = !bad;
  return !bad;
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

// Per row: loss_b = sum_{k<K} w_k (lse_k - s[pi_k]).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    pl_forward_kernel(PLRowsView<scalar_t> v, const int64_t* ranking, DeviceWeights<scalar_t, acc_t> w,
                      unsigned int* bitmap, bool* row_ok, acc_t* row_loss) {
  const int64_t b = blockIdx.x, len = v.length(b), K = v.terms(b);
  const int64_t* pi = ranking + b * v.n;
  const int64_t words = (v.n + 31) / 32;
  if (bitmap != nullptr && !check_permutation(pi, len, bitmap + b * words, row_ok + b)) return;
  w.prepare(b, v.n);
  acc_t local = 0;
  suffix_scan<acc_t>(v.row(b), pi, v.n, len, [&](int64_t k, acc_t x, acc_t lse) {
    if (k < K) local += w.at(b, v.n, k, item_of(pi, k, v.n)) * (lse - x);
  });
  const acc_t total = block_sum<kThreads>(local);
  if (threadIdx.x == 0) row_loss[b] = total;
}

// Per row: grad_scores[pi_j] = g (C_j p_j - w_j [j<K]), C_j = C_{j-1} (1 - p_{j-1}) + w_j [j<K]
// as an affine scan; grad_weights[k] = g (lse_k - x_k) for k < K; PLD's teacher gradient
// g / T * w_k (term_k - loss_b). lse: scratch [B, n].
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    pl_backward_kernel(PLRowsView<scalar_t> v, const int64_t* ranking, DeviceWeights<scalar_t, acc_t> w,
                       const scalar_t* grad, Reduction reduction, acc_t* lse_scratch, scalar_t* grad_scores,
                       scalar_t* grad_weights, scalar_t* grad_teacher) {
  const int64_t b = blockIdx.x, n = v.n, len = v.length(b), K = v.terms(b);
  const int64_t* pi = ranking + b * n;
  w.prepare(b, n);
  const acc_t g = row_upstream<scalar_t, acc_t>(grad, reduction, b, v.B);
  const scalar_t* s = v.row(b);
  acc_t* lse = lse_scratch + b * n;
  acc_t local_loss = 0;
  suffix_scan<acc_t>(s, pi, n, len, [&](int64_t k, acc_t x, acc_t lse_k) {
    lse[k] = lse_k;
    if (k < K) {
      const acc_t term = lse_k - x;
      if (grad_weights != nullptr) grad_weights[b * n + k] = static_cast<scalar_t>(g * term);
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
    if (j < len) grad_scores[b * n + item] = static_cast<scalar_t>(g * pl_score_grad(map.b, p, wj));
  }
  for (int64_t i = len + threadIdx.x; i < n; i += kThreads) grad_scores[b * n + i] = scalar_t(0);
  if (grad_weights != nullptr) {
    for (int64_t k = K + threadIdx.x; k < n; k += kThreads) grad_weights[b * n + k] = scalar_t(0);
  }
  if (grad_teacher == nullptr) return;
  // PLD (every position a term): d loss / d t_c = (1/T) w_c (term_c - loss).
  const acc_t loss = block_sum<kThreads>(local_loss);
  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    const int64_t item = item_of(pi, k, n);
    const acc_t term = lse[k] - static_cast<acc_t>(s[item]);
    grad_teacher[b * n + item] = static_cast<scalar_t>(g * w.inv_t * w.at(b, n, k, item) * (term - loss));
  }
}

// --- listwise KD ------------------------------------------------------------------------------

// Per row: p = softmax(t / Tt), q = softmax(s / Ts) over the len valid items; the row's KL, and
// in backward the gradients (see common/plackett_luce.h).
template <typename scalar_t, typename acc_t>
struct KDRowStats {
  acc_t inv_ts, inv_tt, lse_s, lse_t, kl;

  __device__ KDRowStats(const scalar_t* s, const scalar_t* t, int64_t len, acc_t inv_ts_, acc_t inv_tt_)
      : inv_ts(inv_ts_), inv_tt(inv_tt_) {
    LogSumExp<acc_t> ls, lt;
    for (int64_t i = threadIdx.x; i < len; i += kThreads) {
      ls = ls.merged(LogSumExp<acc_t>::item(static_cast<acc_t>(s[i]) * inv_ts));
      lt = lt.merged(LogSumExp<acc_t>::item(static_cast<acc_t>(t[i]) * inv_tt));
    }
    lse_s = block_all_reduce<kThreads>(ls, LSEMerge()).value();
    lse_t = block_all_reduce<kThreads>(lt, LSEMerge()).value();
    acc_t local = 0;
    for (int64_t i = threadIdx.x; i < len; i += kThreads) {
      const acc_t log_p = static_cast<acc_t>(t[i]) * inv_tt - lse_t;
      const acc_t log_q = static_cast<acc_t>(s[i]) * inv_ts - lse_s;
      local += kl_term(fast_exp(log_p), fast_exp(log_q), log_p - log_q);
    }
    kl = block_sum<kThreads>(local);
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    listwise_kd_forward_kernel(PLRowsView<scalar_t> v, const scalar_t* teacher, acc_t ts, acc_t tt,
                               acc_t* row_loss) {
  const int64_t b = blockIdx.x;
  const KDRowStats<scalar_t, acc_t> row(v.row(b), teacher + b * v.n, v.length(b), 1 / ts, 1 / tt);
  // A row of no items adds 0, also where Ts^2 overflows to inf (inf * 0 would be NaN).
  if (threadIdx.x == 0) row_loss[b] = v.length(b) == 0 ? acc_t(0) : ts * ts * row.kl;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    listwise_kd_backward_kernel(PLRowsView<scalar_t> v, const scalar_t* teacher, acc_t ts, acc_t tt,
                                const scalar_t* grad, Reduction reduction, scalar_t* grad_student,
                                scalar_t* grad_teacher) {
  const int64_t b = blockIdx.x, n = v.n, len = v.length(b);
  const scalar_t *s = v.row(b), *t = teacher + b * n;
  const KDRowStats<scalar_t, acc_t> row(s, t, len, 1 / ts, 1 / tt);
  const acc_t g = row_upstream<scalar_t, acc_t>(grad, reduction, b, v.B);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    acc_t gs = 0, gt = 0;
    if (i < len) {
      const acc_t log_p = static_cast<acc_t>(t[i]) * row.inv_tt - row.lse_t;
      const acc_t log_q = static_cast<acc_t>(s[i]) * row.inv_ts - row.lse_s;
      const acc_t p = fast_exp(log_p), q = fast_exp(log_q);
      gs = g * kl_student_grad(p, q, log_p - log_q, ts);
      gt = g * kl_teacher_grad(p, log_p - log_q, row.kl, ts, tt);
    }
    grad_student[b * n + i] = static_cast<scalar_t>(gs);
    if (grad_teacher != nullptr) grad_teacher[b * n + i] = static_cast<scalar_t>(gt);
  }
}

}  // namespace

template <typename scalar_t, typename acc_t>
bool rank_rows(const scalar_t* keys, const int64_t* lengths, const int64_t* first, int64_t B, int64_t n,
               int64_t* ranking, LaunchTarget on) {
  if (n <= kMaxWarpSortItems) {
    const int64_t blocks = (B + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock;
    const auto run = [&](auto kernel) { launch(kernel, blocks, kThreads, 0, on.stream, keys, lengths, first, B, n, ranking); };
    if (n <= kWarpSize) run(warp_rank_rows_kernel<scalar_t, acc_t, 1>);
    else if (n <= 2 * kWarpSize) run(warp_rank_rows_kernel<scalar_t, acc_t, 2>);
    else if (n <= 4 * kWarpSize) run(warp_rank_rows_kernel<scalar_t, acc_t, 4>);
    else run(warp_rank_rows_kernel<scalar_t, acc_t, 8>);
    return true;
  }
  const int64_t sorted = shared_sort_items(n);
  const int64_t bytes = sorted * int64_t(sizeof(typename RankKeyOf<acc_t>::type));
  if (bytes > kMaxSortBytes) return false;
  launch(rank_rows_kernel<scalar_t, acc_t>, B, kThreads, bytes, on.stream, keys, lengths, first, n, sorted, ranking);
  return true;
}

void move_to_front(const int64_t* order, const int64_t* first, int64_t B, int64_t n, int64_t* ranking,
                   LaunchTarget on) {
  launch(move_to_front_kernel, B, kThreads, 0, on.stream, order, first, n, ranking);
}

template <typename scalar_t, typename acc_t>
void forward(const PLRowsView<scalar_t>& v, const int64_t* ranking, WeightMode mode, const scalar_t* values,
             double temperature, unsigned int* bitmap, bool* row_ok, acc_t* row_loss, LaunchTarget on) {
  launch(pl_forward_kernel<scalar_t, acc_t>, v.B, kThreads, 0, on.stream, v, ranking,
         device_weights<scalar_t, acc_t>(mode, values, temperature), bitmap, row_ok, row_loss);
}

template <typename scalar_t, typename acc_t>
void backward(const PLRowsView<scalar_t>& v, const int64_t* ranking, WeightMode mode, const scalar_t* values,
              double temperature, const scalar_t* grad, Reduction reduction, acc_t* lse_scratch,
              scalar_t* grad_scores, scalar_t* grad_weights, scalar_t* grad_teacher, LaunchTarget on) {
  launch(pl_backward_kernel<scalar_t, acc_t>, v.B, kThreads, 0, on.stream, v, ranking,
         device_weights<scalar_t, acc_t>(mode, values, temperature), grad, reduction, lse_scratch, grad_scores,
         grad_weights, grad_teacher);
}

template <typename scalar_t, typename acc_t>
void listwise_kd_forward(const PLRowsView<scalar_t>& v, const scalar_t* teacher, double ts, double tt,
                         acc_t* row_loss, LaunchTarget on) {
  launch(listwise_kd_forward_kernel<scalar_t, acc_t>, v.B, kThreads, 0, on.stream, v, teacher,
         static_cast<acc_t>(ts), static_cast<acc_t>(tt), row_loss);
}

template <typename scalar_t, typename acc_t>
void listwise_kd_backward(const PLRowsView<scalar_t>& v, const scalar_t* teacher, double ts, double tt,
                          const scalar_t* grad, Reduction reduction, scalar_t* grad_student,
                          scalar_t* grad_teacher, LaunchTarget on) {
  launch(listwise_kd_backward_kernel<scalar_t, acc_t>, v.B, kThreads, 0, on.stream, v, teacher,
         static_cast<acc_t>(ts), static_cast<acc_t>(tt), grad, reduction, grad_student, grad_teacher);
}

#define KDOPS_INSTANTIATE(scalar_t, acc_t)                                                                    \
  template bool rank_rows<scalar_t, acc_t>(const scalar_t*, const int64_t*, const int64_t*, int64_t, int64_t, \
                                           int64_t*, LaunchTarget);                                           \
  template void forward<scalar_t, acc_t>(const PLRowsView<scalar_t>&, const int64_t*, WeightMode,             \
                                         const scalar_t*, double, unsigned int*, bool*, acc_t*, LaunchTarget); \
  template void backward<scalar_t, acc_t>(const PLRowsView<scalar_t>&, const int64_t*, WeightMode,            \
                                          const scalar_t*, double, const scalar_t*, Reduction, acc_t*,        \
                                          scalar_t*, scalar_t*, scalar_t*, LaunchTarget);                     \
  template void listwise_kd_forward<scalar_t, acc_t>(const PLRowsView<scalar_t>&, const scalar_t*, double,    \
                                                     double, acc_t*, LaunchTarget);                           \
  template void listwise_kd_backward<scalar_t, acc_t>(const PLRowsView<scalar_t>&, const scalar_t*, double,   \
                                                      double, const scalar_t*, Reduction, scalar_t*,          \
                                                      scalar_t*, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE)
#undef KDOPS_INSTANTIATE

}  // namespace kdops::cuda::plackett_luce
