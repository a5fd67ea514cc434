// Listwise KD CUDA kernel: per row, p = softmax(t / Tt) and q = softmax(s / Ts) over the len
// valid items, the row's KL and, when asked, the gradients (common/plackett_luce.h), all in one
// launch. A row is computed by one warp (8 rows per 256-thread block) up to kMaxWarpRowItems
// items, else by one block: the same code, reduced warp-wide or block-wide (a Team), in a fixed
// order, so the results are bit-identical from run to run.
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
  __device__ static int rank() { return threadIdx.x % kWarpSize; }
  template <typename T, typename Op>
  __device__ static T all_reduce(T v, Op op) { return warp_all_reduce(v, op); }
};

template <typename scalar_t, typename acc_t, typename Team>
__global__ void __launch_bounds__(kThreads) listwise_kd_rows_kernel(KDRowsCall<scalar_t, acc_t> c) {
  const int64_t b = int64_t(blockIdx.x) * Team::kRowsPerBlock + threadIdx.x / Team::kSize;
  if (b >= c.v.B) return;  // a whole warp (rows past the last): no lane left to shuffle with
  if (c.args_ok != nullptr && Team::rank() == 0) c.args_ok[b] = row_args_ok(c.v, nullptr, b);
  const int64_t n = c.v.n, len = c.v.length(b);
  const scalar_t *s = c.v.row(b), *t = c.teacher + b * n;
  const acc_t ts = static_cast<acc_t>(c.ts), tt = static_cast<acc_t>(c.tt);
  const acc_t inv_ts = 1 / ts, inv_tt = 1 / tt;
  LogSumExp<acc_t> ls, lt;
  for (int64_t i = Team::rank(); i < len; i += Team::kSize) {
    ls = ls.merged(LogSumExp<acc_t>::item(static_cast<acc_t>(s[i]) * inv_ts));
    lt = lt.merged(LogSumExp<acc_t>::item(static_cast<acc_t>(t[i]) * inv_tt));
  }
  const acc_t lse_s = Team::all_reduce(ls, LSEMerge()).value();
  const acc_t lse_t = Team::all_reduce(lt, LSEMerge()).value();
  // log p_i, log q_i of a valid item i
  const auto log_p = [&](int64_t i) { return static_cast<acc_t>(t[i]) * inv_tt - lse_t; };
  const auto log_q = [&](int64_t i) { return static_cast<acc_t>(s[i]) * inv_ts - lse_s; };
  acc_t local = 0;
  for (int64_t i = Team::rank(); i < len; i += Team::kSize) {
    const acc_t lp = log_p(i), lq = log_q(i);
    local += kl_term(fast_exp(lp), fast_exp(lq), lp - lq);
  }
  const acc_t kl = Team::all_reduce(local, SumOp());
  // A row of no items adds 0, also where Ts^2 overflows to inf (inf * 0 would be NaN).
  if (c.row_loss != nullptr && Team::rank() == 0) c.row_loss[b] = len == 0 ? acc_t(0) : ts * ts * kl;
  if (c.grad_student == nullptr) return;
  const acc_t g = row_upstream<scalar_t, acc_t>(c.grad, c.reduction, b, c.v.B);
  for (int64_t i = Team::rank(); i < n; i += Team::kSize) {
    acc_t gs = 0, gt = 0;
    if (i < len) {
      const acc_t lp = log_p(i), lq = log_q(i);
      const acc_t p = fast_exp(lp), q = fast_exp(lq);
      gs = g * kl_student_grad(p, q, lp - lq, ts);
      gt = g * kl_teacher_grad(p, lp - lq, kl, ts, tt);
    }
    c.grad_student[b * n + i] = static_cast<scalar_t>(gs);
    if (c.grad_teacher != nullptr) c.grad_teacher[b * n + i] = static_cast<scalar_t>(gt);
  }
}

}  // namespace

template <typename scalar_t, typename acc_t>
void listwise_kd_rows(const KDRowsCall<scalar_t, acc_t>& c, LaunchTarget on) {
  if (c.v.n <= kMaxWarpRowItems) {
    const int64_t blocks = (c.v.B + WarpTeam::kRowsPerBlock - 1) / WarpTeam::kRowsPerBlock;
    launch(listwise_kd_rows_kernel<scalar_t, acc_t, WarpTeam>, blocks, kThreads, 0, on.stream, c);
  } else {
    launch(listwise_kd_rows_kernel<scalar_t, acc_t, BlockTeam>, c.v.B, kThreads, 0, on.stream, c);
  }
}

#define KDOPS_INSTANTIATE(scalar_t, acc_t) \
  template void listwise_kd_rows<scalar_t, acc_t>(const KDRowsCall<scalar_t, acc_t>&, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE)
#undef KDOPS_INSTANTIATE

}  // namespace kdops::cuda::plackett_luce
