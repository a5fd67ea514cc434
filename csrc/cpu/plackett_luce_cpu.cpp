// Plackett-Luce family CPU kernels: parallel over rows, one fused pass per row. Forward builds
// the row's ranking (checks a given one, or sorts by relevance / teacher logit), then runs the
// reversed log-sum-exp scan and sums the weighted terms. Backward redoes the scan (saving per
// position p_j and 1 - p_j in a per-thread buffer) and scatters d loss / d s straight back to
// the items' own columns. Math: common/plackett_luce.h, shared with the CUDA kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "common/plackett_luce_inputs.h"
#include "common/reduction.h"
#include "cpu/radix_rank.h"

namespace kdops::cpu {
namespace {

// Rows per parallel task: about 4k items, tens of microseconds of work (a sort, exps, logs).
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)); }

// Buffers one thread reuses across its rows (no allocation per row).
template <typename acc_t>
struct RowScratch {
  std::vector<acc_t> p, q, terms;
  std::vector<typename CpuRankKey<acc_t>::type> keys, keys_tmp;
  std::vector<uint8_t> seen;
};

// The first row that failed a check, over all threads (the lowest, so the message is stable).
class FirstBadRow {
 public:
  explicit FirstBadRow(int64_t none) : none_(none), row_(none) {}
  void report(int64_t b) {
    int64_t cur = row_.load();
    while (b < cur && !row_.compare_exchange_weak(cur, b)) {
    }
  }
  void check(const char* name) const {
    const int64_t b = row_.load();
    TORCH_CHECK_VALUE(b == none_, name, " row ", b,
                      " is not a permutation of 0..len-1 (len = lengths[b], or n): its first len "
                      "entries must hold each of the row's valid items exactly once");
  }

 private:
  int64_t none_;
  std::atomic<int64_t> row_;
};

// Whether pi[0..len) holds each of 0..len-1 once: O(len) with a seen-bitmap.
bool is_permutation(const int64_t* pi, int64_t len, std::vector<uint8_t>& seen) {
  seen.assign(len, 0);
  for (int64_t k = 0; k < len; ++k) {
    const int64_t i = pi[k];
    if (i < 0 || i >= len || seen[i]) return false;
    seen[i] = 1;
  }
  return true;
}

// Writes into out[0..n) the ranking of the row's len valid items by descending key (ties to the
// lower index), with `first` (or -1 for none) forced to position 0. Padding columns keep their
// own index, so the saved ranking is a permutation of the whole row.
template <typename acc_t, typename scalar_t>
void rank_by_key(const scalar_t* key, int64_t len, int64_t n, int64_t first, int64_t* out,
                 RowScratch<acc_t>& scratch) {
  auto& keys = scratch.keys;
  keys.clear();
  for (int64_t i = 0; i < len; ++i) {
    if (i != first) keys.push_back(CpuRankKey<acc_t>::make(static_cast<acc_t>(key[i]), i));
  }
  sort_rank_keys<acc_t>(keys, scratch.keys_tmp);
  int64_t k = 0;
  if (first >= 0) out[k++] = first;
  for (const auto& rk : keys) out[k++] = CpuRankKey<acc_t>::index(rk);
  for (int64_t i = len; i < n; ++i) out[i] = i;
}

// Position weights w_k, for one row.
template <typename acc_t>
struct UnitWeights {
  acc_t operator()(int64_t) const { return 1; }
};

template <typename acc_t, typename scalar_t>
struct PositionWeights {
  const scalar_t* w;  // the row of weights[B, n]
  acc_t operator()(int64_t k) const { return static_cast<acc_t>(w[k]); }
};

// PLD: w_k = softmax(teacher / T)[pi_k].
template <typename acc_t, typename scalar_t>
struct TeacherSoftmaxWeights {
  const scalar_t* teacher;  // the row
  const int64_t* pi;
  acc_t inv_t, lse;
  acc_t operator()(int64_t k) const {
    return fast_exp(log_softmax_at(static_cast<acc_t>(teacher[pi[k]]), inv_t, lse));
  }
};

// loss = sum_{k<K} w_k (lse_k - s[pi_k]), by the reversed scan.
template <typename acc_t, typename scalar_t, typename Weights>
acc_t pl_row_loss(const scalar_t* s, const int64_t* pi, int64_t len, int64_t K, const Weights& w) {
  LogSumExp<acc_t> lse;
  acc_t loss = 0;
  for (int64_t k = len - 1; k >= 0; --k) {
    const acc_t x = static_cast<acc_t>(s[pi[k]]);
    lse.push(x);
    if (k < K) loss += w(k) * (lse.value() - x);
  }
  return loss;
}

// grad_row[pi_j] = g * (C_j p_j - w_j [j<K]); padding columns get 0. When `terms` is given it
// receives term_k = lse_k - s[pi_k] for k < K (the gradient of the loss in w_k).
template <typename acc_t, typename scalar_t, typename Weights>
void pl_row_backward(const scalar_t* s, const int64_t* pi, int64_t len, int64_t n, int64_t K,
                     const Weights& w, acc_t g, scalar_t* grad_row, RowScratch<acc_t>& scratch,
                     acc_t* terms) {
  scratch.p.resize(len);
  scratch.q.resize(len);
  acc_t* p = scratch.p.data();
  acc_t* q = scratch.q.data();
  LogSumExp<acc_t> lse;
  for (int64_t k = len - 1; k >= 0; --k) {
    const acc_t x = static_cast<acc_t>(s[pi[k]]);
    lse.push(x, p[k], q[k]);
    if (terms != nullptr && k < K) terms[k] = lse.value() - x;
  }
  acc_t c = 0;
  for (int64_t j = 0; j < len; ++j) {
    const acc_t wj = j < K ? w(j) : acc_t(0);
    c = (j == 0 ? acc_t(0) : c * q[j - 1]) + wj;
    grad_row[pi[j]] = static_cast<scalar_t>(g * pl_score_grad(c, p[j], wj));
  }
  for (int64_t i = len; i < n; ++i) grad_row[i] = scalar_t(0);
}

// Runs row_loss(b, scratch) -> acc_t for every row in parallel and reduces in row order (the
// result does not depend on the thread count). 'mean' divides by B: every row counts, a row of
// length 0 as a 0.
template <typename scalar_t, typename RowLoss>
at::Tensor reduce_rows(int64_t B, int64_t n, Reduction reduction, const at::TensorOptions& opts,
                       const RowLoss& row_loss) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<acc_t> per_row(B);
  at::parallel_for(0, B, row_grain(n), [&](int64_t b0, int64_t b1) {
    RowScratch<acc_t> scratch;
    for (int64_t b = b0; b < b1; ++b) per_row[b] = row_loss(b, scratch);
  });
  if (reduction == Reduction::None) {
    at::Tensor out = at::empty({B}, opts);
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) o[b] = static_cast<scalar_t>(per_row[b]);
    return out;
  }
  acc_t total = 0;
  for (const acc_t v : per_row) total += v;
  if (reduction == Reduction::Mean) total /= static_cast<acc_t>(std::max<int64_t>(B, 1));
  return at::scalar_tensor(static_cast<scalar_t>(total), opts);
}

// Runs row_grad(b, g_b, scratch) for every row in parallel, g_b the upstream gradient of row b's
// loss.
template <typename scalar_t, typename RowGrad>
void backward_rows(const at::Tensor& grad, int64_t B, int64_t n, Reduction reduction,
                   const RowGrad& row_grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor g = grad.contiguous();
  const scalar_t* gp = g.data_ptr<scalar_t>();
  acc_t shared = reduction == Reduction::None ? acc_t(0) : static_cast<acc_t>(gp[0]);
  if (reduction == Reduction::Mean) shared /= static_cast<acc_t>(std::max<int64_t>(B, 1));
  at::parallel_for(0, B, row_grain(n), [&](int64_t b0, int64_t b1) {
    RowScratch<acc_t> scratch;
    for (int64_t b = b0; b < b1; ++b) {
      row_grad(b, reduction == Reduction::None ? static_cast<acc_t>(gp[b]) : shared, scratch);
    }
  });
}

// Calls f with the weights functor of row b: per-position weights when given, else all ones.
template <typename acc_t, typename scalar_t, typename F>
auto with_row_weights(const scalar_t* weights, int64_t b, int64_t n, const F& f) {
  if (weights == nullptr) return f(UnitWeights<acc_t>{});
  return f(PositionWeights<acc_t, scalar_t>{weights + b * n});
}

// --- plackett_luce_loss / listmle -------------------------------------------------------------

at::Tensor plackett_luce_loss_cpu(const at::Tensor& scores, const at::Tensor& ranking,
                                  const c10::optional<at::Tensor>& weights,
                                  const c10::optional<at::Tensor>& lengths,
                                  c10::optional<int64_t> top_k, c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor pi = ranking_arg(ranking, rows.scores, "ranking");
  const at::Tensor w = weights.has_value() ? like_arg(*weights, rows.scores, "weights", "scores")
                                           : at::Tensor();
  FirstBadRow bad(rows.B);
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(),
                                  "plackett_luce_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = rows.view<scalar_t>();
    const int64_t* pi_p = pi.data_ptr<int64_t>();
    const scalar_t* w_p = w.defined() ? w.data_ptr<scalar_t>() : nullptr;
    loss = reduce_rows<scalar_t>(v.B, v.n, red, rows.scores.options(),
                                 [&](int64_t b, RowScratch<acc_t>& scratch) -> acc_t {
      const int64_t* row_pi = pi_p + b * v.n;
      if (!is_permutation(row_pi, v.length(b), scratch.seen)) {
        bad.report(b);
        return 0;
      }
      return with_row_weights<acc_t>(w_p, b, v.n, [&](const auto& wt) {
        return pl_row_loss<acc_t>(v.row(b), row_pi, v.length(b), v.terms(b), wt);
      });
    });
  });
  bad.check("ranking");
  return loss;
}

std::tuple<at::Tensor, at::Tensor> plackett_luce_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& scores, const at::Tensor& ranking,
    const c10::optional<at::Tensor>& weights, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction, bool weights_grad) {
  const auto red = parse_reduction(reduction);
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor pi = ranking_arg(ranking, rows.scores, "ranking");
  const at::Tensor w = weights.has_value() ? like_arg(*weights, rows.scores, "weights", "scores")
                                           : at::Tensor();
  TORCH_CHECK_VALUE(!weights_grad || w.defined(), "weights_grad needs weights");
  check_row_loss_grad(grad, rows.scores, rows.B, red != Reduction::None);
  at::Tensor grad_scores = at::empty({rows.B, rows.n}, rows.scores.options());
  at::Tensor grad_weights = at::empty({weights_grad ? rows.B : 0, rows.n}, rows.scores.options());
  FirstBadRow bad(rows.B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(),
                                  "plackett_luce_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = rows.view<scalar_t>();
    const int64_t* pi_p = pi.data_ptr<int64_t>();
    const scalar_t* w_p = w.defined() ? w.data_ptr<scalar_t>() : nullptr;
    scalar_t* gs = grad_scores.data_ptr<scalar_t>();
    scalar_t* gw = weights_grad ? grad_weights.data_ptr<scalar_t>() : nullptr;
    backward_rows<scalar_t>(grad, v.B, v.n, red,
                            [&](int64_t b, acc_t g, RowScratch<acc_t>& scratch) {
      const int64_t* row_pi = pi_p + b * v.n;
      const int64_t len = v.length(b), K = v.terms(b);
      if (!is_permutation(row_pi, len, scratch.seen)) {
        bad.report(b);
        return;
      }
      scratch.terms.resize(K);
      acc_t* terms = gw != nullptr ? scratch.terms.data() : nullptr;
      with_row_weights<acc_t>(w_p, b, v.n, [&](const auto& wt) {
        pl_row_backward<acc_t>(v.row(b), row_pi, len, v.n, K, wt, g, gs + b * v.n, scratch, terms);
      });
      if (gw == nullptr) return;
      for (int64_t k = 0; k < v.n; ++k) {
        gw[b * v.n + k] = static_cast<scalar_t>(k < K ? g * terms[k] : acc_t(0));
      }
    });
  });
  bad.check("ranking");
  return {grad_scores, grad_weights};
}

std::tuple<at::Tensor, at::Tensor> listmle_cpu(const at::Tensor& scores,
                                               const at::Tensor& relevance,
                                               const c10::optional<at::Tensor>& lengths,
                                               c10::optional<int64_t> top_k,
                                               c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor rel = relevance_arg(relevance, rows.scores);
  at::Tensor ranking = at::empty({rows.B, rows.n}, rows.scores.options().dtype(at::kLong));
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(),
                                  "listmle_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = rows.view<scalar_t>();
    const scalar_t* rel_p = rel.data_ptr<scalar_t>();
    int64_t* pi_p = ranking.data_ptr<int64_t>();
    loss = reduce_rows<scalar_t>(v.B, v.n, red, rows.scores.options(),
                                 [&](int64_t b, RowScratch<acc_t>& scratch) -> acc_t {
      int64_t* row_pi = pi_p + b * v.n;
      rank_by_key(rel_p + b * v.n, v.length(b), v.n, -1, row_pi, scratch);
      return pl_row_loss<acc_t>(v.row(b), row_pi, v.length(b), v.terms(b), UnitWeights<acc_t>{});
    });
  });
  return {loss, ranking};
}

// --- pld_loss ---------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> pld_loss_cpu(const at::Tensor& student,
                                                const at::Tensor& teacher,
                                                const at::Tensor& target, double temperature,
                                                c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const auto a = pld_args(student, teacher, target, temperature);
  at::Tensor ranking = at::empty({a.rows.B, a.rows.n}, a.rows.scores.options().dtype(at::kLong));
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(),
                                  "pld_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.rows.view<scalar_t>();
    const scalar_t* t_p = a.teacher.data_ptr<scalar_t>();
    const int64_t* target_p = a.target.data_ptr<int64_t>();
    int64_t* pi_p = ranking.data_ptr<int64_t>();
    const acc_t inv_t = static_cast<acc_t>(1.0 / a.temperature);
    loss = reduce_rows<scalar_t>(v.B, v.n, red, a.rows.scores.options(),
                                 [&](int64_t b, RowScratch<acc_t>& scratch) -> acc_t {
      const scalar_t* t_row = t_p + b * v.n;
      int64_t* row_pi = pi_p + b * v.n;
      rank_by_key(t_row, v.n, v.n, target_p[b], row_pi, scratch);
      const TeacherSoftmaxWeights<acc_t, scalar_t> w{
          t_row, row_pi, inv_t, scaled_row_logsumexp<acc_t>(t_row, v.n, inv_t)};
      return pl_row_loss<acc_t>(v.row(b), row_pi, v.n, v.n, w);
    });
  });
  return {loss, ranking};
}

std::tuple<at::Tensor, at::Tensor> pld_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const at::Tensor& ranking, double temperature, c10::string_view reduction, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const auto rows = pl_rows_args(student, c10::nullopt, c10::nullopt, "student_logits");
  const at::Tensor t = like_arg(teacher, rows.scores, "teacher_logits", "student_logits");
  const at::Tensor pi = ranking_arg(ranking, rows.scores, "ranking");
  temperature_arg(temperature, "temperature");
  check_row_loss_grad(grad, rows.scores, rows.B, red != Reduction::None);
  at::Tensor grad_student = at::empty({rows.B, rows.n}, rows.scores.options());
  at::Tensor grad_teacher = at::empty({teacher_grad ? rows.B : 0, rows.n}, rows.scores.options());
  FirstBadRow bad(rows.B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(),
                                  "pld_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = rows.view<scalar_t>();
    const scalar_t* t_p = t.data_ptr<scalar_t>();
    const int64_t* pi_p = pi.data_ptr<int64_t>();
    scalar_t* gs = grad_student.data_ptr<scalar_t>();
    scalar_t* gt = teacher_grad ? grad_teacher.data_ptr<scalar_t>() : nullptr;
    const acc_t inv_t = static_cast<acc_t>(1.0 / temperature);
    backward_rows<scalar_t>(grad, v.B, v.n, red,
                            [&](int64_t b, acc_t g, RowScratch<acc_t>& scratch) {
      const scalar_t* t_row = t_p + b * v.n;
      const int64_t* row_pi = pi_p + b * v.n;
      if (!is_permutation(row_pi, v.n, scratch.seen)) {
        bad.report(b);
        return;
      }
      const TeacherSoftmaxWeights<acc_t, scalar_t> w{
          t_row, row_pi, inv_t, scaled_row_logsumexp<acc_t>(t_row, v.n, inv_t)};
      scratch.terms.resize(v.n);
      acc_t* terms = gt != nullptr ? scratch.terms.data() : nullptr;
      pl_row_backward<acc_t>(v.row(b), row_pi, v.n, v.n, v.n, w, g, gs + b * v.n, scratch, terms);
      if (gt == nullptr) return;
      // d loss / d t_c = (1/T) w_c (term_c - loss), through the softmax weights.
      acc_t loss = 0;
      for (int64_t k = 0; k < v.n; ++k) loss += w(k) * terms[k];
      for (int64_t k = 0; k < v.n; ++k) {
        gt[b * v.n + row_pi[k]] = static_cast<scalar_t>(g * inv_t * w(k) * (terms[k] - loss));
      }
    });
  });
  bad.check("ranking");
  return {grad_student, grad_teacher};
}

// --- listwise_kd_loss -------------------------------------------------------------------------

// The row's (log softmax(t/Tt), log softmax(s/Ts)) at item i, and the row's KL, over len items.
template <typename acc_t, typename scalar_t>
struct KDRow {
  const scalar_t* s;
  const scalar_t* t;
  int64_t len;
  acc_t inv_ts, inv_tt, lse_s, lse_t;

  KDRow(const scalar_t* s_, const scalar_t* t_, int64_t len_, acc_t inv_ts_, acc_t inv_tt_)
      : s(s_), t(t_), len(len_), inv_ts(inv_ts_), inv_tt(inv_tt_),
        lse_s(scaled_row_logsumexp<acc_t>(s_, len_, inv_ts_)),
        lse_t(scaled_row_logsumexp<acc_t>(t_, len_, inv_tt_)) {}

  KLItem<acc_t> item(int64_t i) const {
    return {log_softmax_at(static_cast<acc_t>(t[i]), inv_tt, lse_t),
            log_softmax_at(static_cast<acc_t>(s[i]), inv_ts, lse_s)};
  }
  acc_t kl() const {
    acc_t sum = 0;
    for (int64_t i = 0; i < len; ++i) sum += item(i).term();
    return sum;
  }
};

at::Tensor listwise_kd_loss_cpu(const at::Tensor& student, const at::Tensor& teacher,
                                const c10::optional<at::Tensor>& lengths, double ts, double tt,
                                c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const auto a = kd_args(student, teacher, lengths, ts, tt);
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(),
                                  "listwise_kd_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.rows.view<scalar_t>();
    const scalar_t* t_p = a.teacher.data_ptr<scalar_t>();
    const acc_t inv_ts = static_cast<acc_t>(1.0 / a.ts), inv_tt = static_cast<acc_t>(1.0 / a.tt);
    const acc_t scale = static_cast<acc_t>(a.ts * a.ts);
    loss = reduce_rows<scalar_t>(v.B, v.n, red, a.rows.scores.options(),
                                 [&](int64_t b, RowScratch<acc_t>&) -> acc_t {
      return scale * KDRow<acc_t, scalar_t>(v.row(b), t_p + b * v.n, v.length(b), inv_ts, inv_tt).kl();
    });
  });
  return loss;
}

std::tuple<at::Tensor, at::Tensor> listwise_kd_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const c10::optional<at::Tensor>& lengths, double ts, double tt, c10::string_view reduction,
    bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const auto a = kd_args(student, teacher, lengths, ts, tt);
  check_row_loss_grad(grad, a.rows.scores, a.rows.B, red != Reduction::None);
  const auto opts = a.rows.scores.options();
  at::Tensor grad_student = at::empty({a.rows.B, a.rows.n}, opts);
  at::Tensor grad_teacher = at::empty({teacher_grad ? a.rows.B : 0, a.rows.n}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(),
                                  "listwise_kd_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.rows.view<scalar_t>();
    const scalar_t* t_p = a.teacher.data_ptr<scalar_t>();
    scalar_t* gs = grad_student.data_ptr<scalar_t>();
    scalar_t* gt = teacher_grad ? grad_teacher.data_ptr<scalar_t>() : nullptr;
    const acc_t ts_a = static_cast<acc_t>(a.ts), tt_a = static_cast<acc_t>(a.tt);
    backward_rows<scalar_t>(grad, v.B, v.n, red, [&](int64_t b, acc_t g, RowScratch<acc_t>&) {
      const int64_t len = v.length(b);
      const KDRow<acc_t, scalar_t> row(v.row(b), t_p + b * v.n, len, 1 / ts_a, 1 / tt_a);
      scalar_t* gs_row = gs + b * v.n;
      for (int64_t i = 0; i < v.n; ++i) {
        gs_row[i] = static_cast<scalar_t>(i < len ? g * row.item(i).student_grad(ts_a) : acc_t(0));
      }
      if (gt == nullptr) return;
      const acc_t kl = row.kl();
      scalar_t* gt_row = gt + b * v.n;
      for (int64_t i = 0; i < v.n; ++i) {
        gt_row[i] =
            static_cast<scalar_t>(i < len ? g * row.item(i).teacher_grad(ts_a, tt_a, kl) : acc_t(0));
      }
    });
  });
  return {grad_student, grad_teacher};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) {
  m.impl("plackett_luce_loss", &plackett_luce_loss_cpu);
  m.impl("plackett_luce_loss_backward", &plackett_luce_loss_backward_cpu);
  m.impl("listmle", &listmle_cpu);
  m.impl("pld_loss", &pld_loss_cpu);
  m.impl("pld_loss_backward", &pld_loss_backward_cpu);
  m.impl("listwise_kd_loss", &listwise_kd_loss_cpu);
  m.impl("listwise_kd_loss_backward", &listwise_kd_loss_backward_cpu);
}

}  // namespace kdops::cpu
