// Listwise KD CUDA kernel: per row, p = softmax(t / Tt) and q = softmax(s / Ts) over the len
// valid items, the row's Ts^2 KL and, when asked, the gradients, in units of Ts
// (common/plackett_luce.h), all in one launch, with the rows' losses reduced over the grid at its
// end (finish_rows). A row is computed by one warp (8 rows per
// 256-thread block) up to kMaxWarpRowItems items, else by one block: the same code, reduced
// warp-wide or block-wide (a Team), in a fixed order, so the results are bit-identical from run
// to run.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/block_reduce.cuh"
#include "cuda/launch.cuh"
#include "cuda/plackett_luce_device.cuh"
#include "cuda/warp_scan.cuh"

namespace kdops::cuda::plackett_luce {
namespace {

constexpr int kThreads = 256;

// The threads that compute one row: a whole block, or one warp of it.
struct BlockTeam {
  static constexpr int kSize = kThreads;
  static constexpr int kRowsPerBlock = 1;
  __device__ static int rank() { return threadIdx.x; }
  template <typename T, typename Op>
  __device__ static T all_reduce(T v, Op op) { return block_all_reduce<kThreads>(v, op); }
};

struct WarpTeam {
  static constexpr int kSize = kWarpSize;
  static constexpr int kRowsPerBlock = kThreads / kWarpSize;
  static_assert(kRowsPerBlock == kRowsPerWarpBlock, "row_blocks sizes the grid sum's scratch by it");
  __device__ static int rank() { return threadIdx.x % kWarpSize; }
  template <typename T, typename Op>
  __device__ static T all_reduce(T v, Op op) { return warp_all_reduce(v, op); }
};

// The max of two values, skipping a NaN b (as the CPU kernels' row max): partials start at
// -inf and never take a NaN, so a NaN item leaves the max of the numbers.
struct MaxOp {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const { return b > a ? b : a; }
};

// p, q, u, v = Ts (log p - log q) = u - log_ratio and r = v / Ts of one valid item
// (common/plackett_luce.h).
template <typename acc_t>
struct KDItem {
  acc_t p, q, u, v, r;
};

// Team-wide: row b, everything c asks for.
template <typename scalar_t, typename acc_t, typename Team>
__device__ RowResult<acc_t> listwise_kd_row(const KDRowsCall<scalar_t, acc_t>& c, int64_t b, double ts_value,
                                            double tt_value) {
  RowResult<acc_t> result;
  if (c.out.args_ok != nullptr && !row_args_ok(c.v, nullptr, b)) result.bad = kArgsBad;
  const int64_t n = c.v.n, len = c.v.length(b);
  const scalar_t *s = c.v.row(b), *t = c.teacher + b * n;
  // The temperatures in acc_t (past its range they round to 0 or inf, where the tempered
  // exponents still give the limits); Ts in double for the per-row sums.
  const acc_t ts = static_cast<acc_t>(ts_value), tt = static_cast<acc_t>(tt_value);
  const acc_t ratio = static_cast<acc_t>(ts_value / tt_value);
  acc_t ms = neg_inf<acc_t>(), mt = neg_inf<acc_t>();
  for (int64_t i = Team::rank(); i < len; i += Team::kSize) {
    ms = MaxOp()(ms, static_cast<acc_t>(s[i]));
    mt = MaxOp()(mt, static_cast<acc_t>(t[i]));
  }
  ms = softmax_max(Team::all_reduce(ms, MaxOp()));
  mt = softmax_max(Team::all_reduce(mt, MaxOp()));
  const auto ds = [&](int64_t i) { return static_cast<acc_t>(s[i]) - ms; };
  const auto dt = [&](int64_t i) { return static_cast<acc_t>(t[i]) - mt; };
  const auto zs = [&](int64_t i) { return tempered(static_cast<acc_t>(s[i]), ms, ts); };
  const auto zt = [&](int64_t i) { return tempered(static_cast<acc_t>(t[i]), mt, tt); };
  // The softmax sums S_s, S_t and D = Ts (S_t - S_s).
  acc_t sum_s = 0, sum_t = 0, d = 0;
  for (int64_t i = Team::rank(); i < len; i += Team::kSize) {
    const acc_t a = zs(i), z = zt(i), es = fast_exp(a), et = fast_exp(z);
    sum_s += es;
    sum_t += et;
    d += kd_scaled_exp_difference(dt(i), z, et, ds(i), a, es, ts, ratio);
  }
  sum_s = Team::all_reduce(sum_s, SumOp());
  sum_t = Team::all_reduce(sum_t, SumOp());
  d = Team::all_reduce(d, SumOp());
  const acc_t log_ratio = static_cast<acc_t>(kd_scaled_log_ratio(d, sum_s, ts_value));
  const auto item = [&](int64_t i) {
    const acc_t u = kd_shift_difference(dt(i), ds(i), ratio), v = u - log_ratio;
    return KDItem<acc_t>{fast_exp(zt(i)) / sum_t, fast_exp(zs(i)) / sum_s, u, v, divided(v, ts)};
  };
  const bool loss_units = ts_value >= 1;
  acc_t local = 0, local_u = 0;
  for (int64_t i = Team::rank(); i < len; i += Team::kSize) {
    const KDItem<acc_t> it = item(i);
    local += loss_units ? kd_term<true>(it.p, it.q, it.v, it.r, ts) : kd_term<false>(it.p, it.q, it.v, it.r, ts);
    local_u += kd_weighted_shift(it.p, it.u);
  }
  const double terms = Team::all_reduce(local, SumOp());
  result.loss = static_cast<acc_t>(kd_row_loss(terms, ts_value, len == 0));
  if (c.grad_student == nullptr) return result;
  const acc_t g = row_upstream<scalar_t, acc_t>(c.grad, c.reduction, b, c.v.B);
  const bool ts_grad = c.out.temperature_grad[0] != nullptr, tt_grad = c.out.temperature_grad[1] != nullptr;
  const bool teacher_side = c.grad_teacher != nullptr || tt_grad;
  const acc_t mean_u = teacher_side ? Team::all_reduce(local_u, SumOp()) : acc_t(0);
  acc_t student_dot = 0, teacher_dot = 0;  // sum_i (x_i - max) dL/dx_i of each side
  for (int64_t i = Team::rank(); i < n; i += Team::kSize) {
    acc_t gs = 0, gt = 0;
    if (i < len) {
      const KDItem<acc_t> it = item(i);
      gs = g * kd_student_grad(it.p, it.q, it.v, it.r, ts);
      gt = teacher_side ? g * kd_teacher_grad(it.p, it.u, mean_u, ratio) : acc_t(0);
      student_dot += temperature_dot_term(static_cast<acc_t>(s[i]), ms, gs);
      teacher_dot += temperature_dot_term(static_cast<acc_t>(t[i]), mt, gt);
    }
    c.grad_student[b * n + i] = static_cast<scalar_t>(gs);
    if (c.grad_teacher != nullptr) c.grad_teacher[b * n + i] = static_cast<scalar_t>(gt);
  }
  if (ts_grad) {
    result.temperature_grad[0] = student_temperature_grad(g * result.loss, Team::all_reduce(student_dot, SumOp()), ts);
  }
  if (tt_grad) result.temperature_grad[1] = logits_temperature_grad(Team::all_reduce(teacher_dot, SumOp()), tt);
  return result;
}

// A row per Team; the block's rows and the grid's reduced at the end (finish_rows).
template <typename scalar_t, typename acc_t, typename Team>
__global__ void __launch_bounds__(kThreads) listwise_kd_rows_kernel(KDRowsCall<scalar_t, acc_t> c) {
  const int64_t b = int64_t(blockIdx.x) * Team::kRowsPerBlock + threadIdx.x / Team::kSize;
  const double ts = c.ts.get(), tt = c.tt.get();  // read where they are (device memory: a broadcast load)
  RowResult<acc_t> share;  // the team's first thread's row; a warp past the last row adds nothing
  if (b < c.v.B) {
    const RowResult<acc_t> row = listwise_kd_row<scalar_t, acc_t, Team>(c, b, ts, tt);
    if (Team::rank() == 0) {
      store_row(c.out, c.reduction, b, row);
      share = row;
    }
  }
  finish_rows<kThreads>(c.out, c.reduction, c.v.B, share, ts, tt);
}

}  // namespace

template <typename scalar_t, typename acc_t>
void listwise_kd_rows(const KDRowsCall<scalar_t, acc_t>& c, LaunchTarget on) {
  const int64_t blocks = row_blocks(c.v.B, c.v.n);
  if (c.v.n <= kMaxWarpRowItems) {
    launch(listwise_kd_rows_kernel<scalar_t, acc_t, WarpTeam>, blocks, kThreads, 0, on.stream, c);
  } else {
    launch(listwise_kd_rows_kernel<scalar_t, acc_t, BlockTeam>, blocks, kThreads, 0, on.stream, c);
  }
}

#define KDOPS_INSTANTIATE(scalar_t, acc_t) \
  template void listwise_kd_rows<scalar_t, acc_t>(const KDRowsCall<scalar_t, acc_t>&, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE)
#undef KDOPS_INSTANTIATE

}  // namespace kdops::cuda::plackett_luce
