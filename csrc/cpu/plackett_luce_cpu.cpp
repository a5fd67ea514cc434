// Plackett-Luce family CPU kernels: parallel over rows, one fused pass per row with per-thread
// buffers. Forward builds the row's ranking (checks a given one with a seen-bitmap, or radix-sorts
// by relevance / teacher logit), runs the reversed log-sum-exp scan (scan_row) and sums the
// weighted terms. Backward redoes the scan from the saved ranking (forward keeps nothing of size
// [B, n] but the ranking) and scatters d loss / d s straight back to the items' own columns.
// Row loops are written so that the compiler vectorises them (common/fast_math.h). Math:
// common/plackett_luce.h, shared with the CUDA kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/plackett_luce_inputs.h"
#include "common/reduction.h"
#include "cpu/cpu_clones.h"
#include "cpu/parallel_grain.h"
#include "cpu/radix_rank.h"
#include "cpu/row_reduce.h"

// Loops over a row's items that the compiler must vectorise: the polynomial exp/log have
// selects (if-converted only under omp simd), and float sums need the reduction clause. The
// summation order then depends on the vector width, fixed at build time, so results stay
// independent of the thread count.
#define KDOPS_SIMD _Pragma("omp simd")
#define KDOPS_SIMD_SUM(var) _Pragma(KDOPS_STR(omp simd reduction(+ : var)))
#define KDOPS_SIMD_MAX(var) _Pragma(KDOPS_STR(omp simd reduction(max : var)))
#define KDOPS_STR(x) #x


namespace kdops::cpu {
namespace {

// Rows per parallel task (parallel_grain): an item costs 5-15 ns forward and backward at n = 64
// (a sort, exps, logs; ~45 ns at n = 1000, where the sort grows), so 10 ns an item.
constexpr double kItemNs = 10;
int64_t row_grain(int64_t n) { return parallel_grain(kItemNs * static_cast<double>(std::max<int64_t>(n, 1))); }

// Buffers one thread reuses across its rows (no allocation per row).
template <typename acc_t>
struct RowScratch {
  std::vector<acc_t> x, m, e, terms, weights;
  // The scan's suffix sums and 1 - p_k in double: the gradient's recurrence multiplies 1 - p_k
  // over the whole row, and float roundings would drift by ~1e-5 over 50,000 positions.
  std::vector<double> rest, sum;
  std::vector<typename RankKeyOf<acc_t>::type> keys, keys_tmp;
  std::vector<uint8_t> seen;
  CpuIsa sort_network = sort_network_isa();
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
  keys.resize(len);
  for (int64_t i = 0; i < len; ++i) keys[i] = RankKeyOf<acc_t>::make(static_cast<acc_t>(key[i]), i);
  if (first >= 0) keys.erase(keys.begin() + first);
  sort_rank_keys<acc_t>(keys, scratch.keys_tmp, scratch.sort_network);
  int64_t k = 0;
  if (first >= 0) out[k++] = first;
  for (const auto& rk : keys) out[k++] = RankKeyOf<acc_t>::index(rk);
  for (int64_t i = len; i < n; ++i) out[i] = i;
}

// A row's softmax at a temperature, unnormalised: its max and sum = sum_i exp(z_i) in [1, len]
// (z_i = (x_i - max) / T), accumulated in double (a float sum of 50,000 terms loses 3-4 digits).
template <typename acc_t>
struct SoftmaxNorm {
  acc_t max;
  double sum;
};

// softmax(x / t) over a row of len items, unnormalised: the exponents z_i = (x_i - max) / t
// (tempered: the max items' exactly 0, no x / t formed) into `shifted`, which callers reuse
// rather than recompute, and exp(z_i) into prob (may be `shifted`); divide by the returned sum.
// One exp and one division per item, in a loop the compiler vectorises. A row with no number
// above -inf has no softmax: NaN (softmax_max), as torch.softmax and the CUDA kernels give.
template <typename acc_t, typename scalar_t>
KDOPS_CPU_CLONES SoftmaxNorm<acc_t> softmax_row(const scalar_t* x, int64_t len, acc_t t,
                                                acc_t* shifted, acc_t* prob) {
  acc_t max = neg_inf<acc_t>();
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    max = row_max(x, len);
  } else {
    KDOPS_SIMD_MAX(max)
    for (int64_t i = 0; i < len; ++i) max = std::max(max, static_cast<acc_t>(x[i]));
  }
  if (len == 0) return {max, 1.0};
  max = softmax_max(max);
  KDOPS_SIMD
  for (int64_t i = 0; i < len; ++i) {
    const acc_t z = tempered(static_cast<acc_t>(x[i]), max, t);
    shifted[i] = z;
    prob[i] = fast_exp(z);  // after shifted[i]: the two may be one array
  }
  return {max, row_sum_double(prob, len)};
}

// prob[0..len) /= sum.
template <typename acc_t>
KDOPS_CPU_CLONES void normalise(acc_t* prob, int64_t len, double sum) {
  const acc_t inv = static_cast<acc_t>(1 / sum);
  KDOPS_SIMD
  for (int64_t i = 0; i < len; ++i) prob[i] *= inv;
}

// The reversed log-sum-exp scan of one row, in array passes (the exps vectorise; one sequential
// multiply-add loop). For the ranked scores x_k = s[pi_k], k < len:
//   m_k = max_{j>=k} x_j,  e_k = exp(x_k - m_k),
//   S_k = sum_{j>=k} exp(x_j - m_k) = rest_k + e_k,  rest_k = S_{k+1} exp(m_{k+1} - m_k),
// so lse_k = m_k + log S_k, p_k = e_k / S_k and 1 - p_k = rest_k / S_k without cancellation.
// S_k >= 1 (the max's own term): no division by 0, no overflow for scores of any magnitude.
template <typename acc_t, typename scalar_t>
KDOPS_CPU_CLONES void scan_row(const scalar_t* s, const int64_t* pi, int64_t len, RowScratch<acc_t>& b) {
  for (auto* v : {&b.x, &b.m, &b.e}) v->resize(len);
  for (auto* v : {&b.rest, &b.sum}) v->resize(len);
  acc_t *x = b.x.data(), *m = b.m.data(), *e = b.e.data();
  double *rest = b.rest.data(), *sum = b.sum.data();
  for (int64_t k = 0; k < len; ++k) x[k] = static_cast<acc_t>(s[pi[k]]);
  acc_t run = neg_inf<acc_t>();
  for (int64_t k = len - 1; k >= 0; --k) m[k] = run = std::max(run, x[k]);
  KDOPS_SIMD
  for (int64_t k = 0; k < len; ++k) e[k] = fast_exp(shifted(x[k], m[k]));
  // exp(m_{k+1} - m_k) in double, and only where the suffix max changes (else exactly 1): these
  // factors multiply along the row, so their roundings would accumulate.
  double total = 0;
  for (int64_t k = len - 1; k >= 0; --k) {
    const bool change = k + 1 < len && m[k + 1] != m[k];
    const double r = change ? total * std::exp(static_cast<double>(m[k + 1]) - m[k]) : total;
    rest[k] = r;
    total = r + e[k];
    sum[k] = total;
  }
}

// After scan_row: terms[k] = lse_k - x_k for k < K (the gradient of the loss in w_k).
template <typename acc_t>
KDOPS_CPU_CLONES acc_t* row_terms(int64_t K, RowScratch<acc_t>& b) {
  b.terms.resize(K);
  acc_t* t = b.terms.data();
  const acc_t *x = b.x.data(), *m = b.m.data();
  const double* sum = b.sum.data();
  KDOPS_SIMD
  for (int64_t k = 0; k < K; ++k) t[k] = m[k] + fast_log(static_cast<acc_t>(sum[k])) - x[k];
  return t;
}

// Position weights w_k of one row: all ones, or a row of per-position values.
template <typename acc_t>
struct UnitWeights {
  acc_t operator()(int64_t) const { return 1; }
};

template <typename acc_t, typename scalar_t>
struct PositionWeights {
  const scalar_t* w;
  acc_t operator()(int64_t k) const { return static_cast<acc_t>(w[k]); }
};

// sum_{k<K} w_k terms_k.
template <typename acc_t, typename Weights>
acc_t weighted_sum(int64_t K, const Weights& w, const acc_t* terms) {
  double loss = 0;
  KDOPS_SIMD_SUM(loss)
  for (int64_t k = 0; k < K; ++k) loss += w(k) * terms[k];
  return static_cast<acc_t>(loss);
}

// loss = sum_{k<K} w_k (lse_k - s[pi_k]).
template <typename acc_t, typename scalar_t, typename Weights>
acc_t pl_row_loss(const scalar_t* s, const int64_t* pi, int64_t len, int64_t K, const Weights& w,
                  RowScratch<acc_t>& scratch) {
  scan_row(s, pi, len, scratch);
  return weighted_sum(K, w, row_terms(K, scratch));
}

// After scan_row: p_k = e_k / S_k into e and 1 - p_k = rest_k / S_k into rest (vectorised, off
// the sequential loop of pl_row_grad).
template <typename acc_t>
KDOPS_CPU_CLONES void row_probabilities(int64_t len, RowScratch<acc_t>& b) {
  acc_t* e = b.e.data();
  double *rest = b.rest.data(), *sum = b.sum.data();
  KDOPS_SIMD
  for (int64_t k = 0; k < len; ++k) {
    const double inv = 1 / sum[k];
    e[k] = static_cast<acc_t>(e[k] * inv);
    rest[k] *= inv;
  }
}

// grad_row[pi_j] = g * (C_j p_j - w_j [j<K]) with C_j = C_{j-1} (1 - p_{j-1}) + w_j [j<K];
// padding columns get 0. Call after scan_row.
template <typename acc_t, typename scalar_t, typename Weights>
void pl_row_grad(const int64_t* pi, int64_t len, int64_t n, int64_t K, const Weights& w, acc_t g,
                 RowScratch<acc_t>& b, scalar_t* grad_row) {
  row_probabilities(len, b);
  const acc_t* p = b.e.data();
  const double* q = b.rest.data();
  double c = 0;  // a float recurrence over 50,000 positions would drift by 1e-3 relative
  for (int64_t j = 0; j < len; ++j) {
    const acc_t wj = j < K ? w(j) : acc_t(0);
    c = (j == 0 ? 0.0 : c * q[j - 1]) + wj;
    grad_row[pi[j]] = static_cast<scalar_t>(g * pl_score_grad<double>(c, p[j], wj));
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
  double total = 0;
  for (const acc_t v : per_row) total += v;
  if (reduction == Reduction::Mean) total /= static_cast<double>(std::max<int64_t>(B, 1));
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

// The upstream gradient backward_rows gives each row's loss for a loss gradient of 1 (the
// *_and_grads ops, which compute the gradients in the forward pass).
template <typename acc_t>
acc_t unit_row_grad(Reduction reduction, int64_t B) {
  return reduction == Reduction::Mean ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(B, 1)) : acc_t(1);
}

// Calls f with the weights functor of row b: per-position weights when given, else all ones.
template <typename acc_t, typename scalar_t, typename F>
auto with_row_weights(const scalar_t* weights, int64_t b, int64_t n, const F& f) {
  if (weights == nullptr) return f(UnitWeights<acc_t>{});
  return f(PositionWeights<acc_t, scalar_t>{weights + b * n});
}

// PLD's position weights w_k = softmax(teacher / T)[pi_k], gathered into the row's buffer.
template <typename acc_t, typename scalar_t>
PositionWeights<acc_t, acc_t> teacher_weights(const scalar_t* teacher, const int64_t* pi,
                                              int64_t n, acc_t t, RowScratch<acc_t>& b) {
  b.weights.resize(2 * n);
  acc_t* prob = b.weights.data() + n;
  normalise(prob, n, softmax_row(teacher, n, t, prob, prob).sum);
  for (int64_t k = 0; k < n; ++k) b.weights[k] = prob[pi[k]];
  return {b.weights.data()};
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
        return pl_row_loss<acc_t>(v.row(b), row_pi, v.length(b), v.terms(b), wt, scratch);
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
      scan_row(v.row(b), row_pi, len, scratch);
      with_row_weights<acc_t>(w_p, b, v.n, [&](const auto& wt) {
        pl_row_grad<acc_t>(row_pi, len, v.n, K, wt, g, scratch, gs + b * v.n);
      });
      if (gw == nullptr) return;
      const acc_t* terms = row_terms(K, scratch);
      for (int64_t k = 0; k < v.n; ++k) {
        gw[b * v.n + k] = static_cast<scalar_t>(k < K ? g * terms[k] : acc_t(0));
      }
    });
  });
  bad.check("ranking");
  return {grad_scores, grad_weights};
}

// listmle, and with_grad: the gradient plackett_luce_loss_backward gives on its ranking at an
// upstream gradient of 1, from the same scan (listmle_and_grads). Returns loss, ranking and the
// gradient ([0, n] without with_grad).
std::tuple<at::Tensor, at::Tensor, at::Tensor> listmle_rows(
    const at::Tensor& scores, const at::Tensor& relevance, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction, bool with_grad) {
  const auto red = parse_reduction(reduction);
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor rel = relevance_arg(relevance, rows.scores);
  at::Tensor ranking = at::empty({rows.B, rows.n}, rows.scores.options().dtype(at::kLong));
  at::Tensor grad_scores = at::empty({with_grad ? rows.B : 0, rows.n}, rows.scores.options());
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(),
                                  "listmle_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = rows.view<scalar_t>();
    const scalar_t* rel_p = rel.data_ptr<scalar_t>();
    int64_t* pi_p = ranking.data_ptr<int64_t>();
    scalar_t* gs = with_grad ? grad_scores.data_ptr<scalar_t>() : nullptr;
    const acc_t g = unit_row_grad<acc_t>(red, v.B);
    loss = reduce_rows<scalar_t>(v.B, v.n, red, rows.scores.options(),
                                 [&](int64_t b, RowScratch<acc_t>& scratch) -> acc_t {
      int64_t* row_pi = pi_p + b * v.n;
      const int64_t len = v.length(b), K = v.terms(b);
      rank_by_key(rel_p + b * v.n, len, v.n, -1, row_pi, scratch);
      const acc_t row_loss = pl_row_loss<acc_t>(v.row(b), row_pi, len, K, UnitWeights<acc_t>{}, scratch);
      if (gs != nullptr) pl_row_grad<acc_t>(row_pi, len, v.n, K, UnitWeights<acc_t>{}, g, scratch, gs + b * v.n);
      return row_loss;
    });
  });
  return {loss, ranking, grad_scores};
}

std::tuple<at::Tensor, at::Tensor> listmle_cpu(const at::Tensor& scores, const at::Tensor& relevance,
                                               const c10::optional<at::Tensor>& lengths,
                                               c10::optional<int64_t> top_k, c10::string_view reduction) {
  auto out = listmle_rows(scores, relevance, lengths, top_k, reduction, false);
  return {std::get<0>(out), std::get<1>(out)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> listmle_and_grads_cpu(
    const at::Tensor& scores, const at::Tensor& relevance, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction) {
  return listmle_rows(scores, relevance, lengths, top_k, reduction, true);
}

// --- pld_loss ---------------------------------------------------------------------------------

// d loss / d t_c = w_c (term_c - loss) / T through the softmax weights, times the upstream g
// (pld_teacher_grad_of), into the row's columns pi_k.
template <typename acc_t, typename scalar_t>
void pld_teacher_grad(const int64_t* pi, int64_t n, acc_t g, acc_t t, const PositionWeights<acc_t, acc_t>& w,
                      const acc_t* terms, acc_t loss, scalar_t* grad_row) {
  for (int64_t k = 0; k < n; ++k) grad_row[pi[k]] = static_cast<scalar_t>(pld_teacher_grad_of(g, w(k), terms[k], loss, t));
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
    const acc_t t_a = static_cast<acc_t>(temperature);
    backward_rows<scalar_t>(grad, v.B, v.n, red,
                            [&](int64_t b, acc_t g, RowScratch<acc_t>& scratch) {
      const scalar_t* t_row = t_p + b * v.n;
      const int64_t* row_pi = pi_p + b * v.n;
      if (!is_permutation(row_pi, v.n, scratch.seen)) {
        bad.report(b);
        return;
      }
      const auto w = teacher_weights(t_row, row_pi, v.n, t_a, scratch);
      scan_row(v.row(b), row_pi, v.n, scratch);
      pl_row_grad<acc_t>(row_pi, v.n, v.n, v.n, w, g, scratch, gs + b * v.n);
      if (gt == nullptr) return;
      const acc_t* terms = row_terms(v.n, scratch);
      pld_teacher_grad(row_pi, v.n, g, t_a, w, terms, weighted_sum(v.n, w, terms), gt + b * v.n);
    });
  });
  bad.check("ranking");
  return {grad_student, grad_teacher};
}

// pld_loss, and with_grads: the gradients pld_loss_backward gives at an upstream gradient of 1
// (the teacher's when teacher_grad), from the same teacher softmax and scan (pld_loss_and_grads).
// Returns loss, ranking, d student ([0, n] without with_grads), d teacher ([0, n] unless asked).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pld_rows(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
    double temperature, c10::string_view reduction, bool with_grads, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const auto a = pld_args(student, teacher, target, temperature);
  const auto opts = a.rows.scores.options();
  at::Tensor ranking = at::empty({a.rows.B, a.rows.n}, opts.dtype(at::kLong));
  at::Tensor grad_student = at::empty({with_grads ? a.rows.B : 0, a.rows.n}, opts);
  at::Tensor grad_teacher = at::empty({with_grads && teacher_grad ? a.rows.B : 0, a.rows.n}, opts);
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(),
                                  "pld_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.rows.view<scalar_t>();
    const scalar_t* t_p = a.teacher.data_ptr<scalar_t>();
    const int64_t* target_p = a.target.data_ptr<int64_t>();
    int64_t* pi_p = ranking.data_ptr<int64_t>();
    scalar_t* gs = with_grads ? grad_student.data_ptr<scalar_t>() : nullptr;
    scalar_t* gt = with_grads && teacher_grad ? grad_teacher.data_ptr<scalar_t>() : nullptr;
    const acc_t t_a = static_cast<acc_t>(a.temperature);
    const acc_t g = unit_row_grad<acc_t>(red, v.B);
    loss = reduce_rows<scalar_t>(v.B, v.n, red, opts, [&](int64_t b, RowScratch<acc_t>& scratch) -> acc_t {
      const scalar_t* t_row = t_p + b * v.n;
      int64_t* row_pi = pi_p + b * v.n;
      rank_by_key(t_row, v.n, v.n, target_p[b], row_pi, scratch);
      const auto w = teacher_weights(t_row, row_pi, v.n, t_a, scratch);
      scan_row(v.row(b), row_pi, v.n, scratch);
      const acc_t* terms = row_terms(v.n, scratch);
      const acc_t row_loss = weighted_sum(v.n, w, terms);
      if (gt != nullptr) pld_teacher_grad(row_pi, v.n, g, t_a, w, terms, row_loss, gt + b * v.n);
      if (gs != nullptr) pl_row_grad<acc_t>(row_pi, v.n, v.n, v.n, w, g, scratch, gs + b * v.n);  // after terms: it overwrites e
      return row_loss;
    });
  });
  return {loss, ranking, grad_student, grad_teacher};
}

std::tuple<at::Tensor, at::Tensor> pld_loss_cpu(const at::Tensor& student, const at::Tensor& teacher,
                                                const at::Tensor& target, double temperature,
                                                c10::string_view reduction) {
  auto out = pld_rows(student, teacher, target, temperature, reduction, false, false);
  return {std::get<0>(out), std::get<1>(out)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pld_loss_and_grads_cpu(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
    double temperature, c10::string_view reduction, bool teacher_grad) {
  return pld_rows(student, teacher, target, temperature, reduction, true, teacher_grad);
}

// --- listwise_kd_loss -------------------------------------------------------------------------

// The temperatures of a listwise KD call in the accumulation type (Ts, Ts / Tt) and Ts in double
// (kd_scaled_log_ratio, kd_row_loss): a temperature past acc_t's range rounds to 0 or inf there,
// where the tempered exponents still give the limits.
template <typename acc_t>
struct KDTemperatures {
  double ts_d;
  acc_t ts, tt, ratio;
  KDTemperatures(double ts, double tt)
      : ts_d(ts), ts(static_cast<acc_t>(ts)), tt(static_cast<acc_t>(tt)), ratio(static_cast<acc_t>(ts / tt)) {}
};

// sum_i f(i) over a row of len items, in float over chunks of 64 (a loop the compiler
// vectorises; a double reduction in it does not) and the chunk sums in double, so the error
// stays a few float roundings whatever the row's length.
template <typename acc_t, typename F>
inline __attribute__((always_inline)) double chunked_sum(int64_t len, const F& f) {
  constexpr int64_t kChunk = 64;
  double total = 0;
  for (int64_t c = 0; c < len; c += kChunk) {
    const int64_t end = std::min(len, c + kChunk);
    acc_t part = 0;
    KDOPS_SIMD_SUM(part)
    for (int64_t i = c; i < end; ++i) part += f(i);
    total += part;
  }
  return total;
}

// After the two softmax_row calls of a KDRow (z and unnormalised e of the teacher in zt, pt, of
// the student in zs, qs): log_ratio from D = Ts (S_t - S_s) (chunked_sum), never from two
// O(log n) log-normalisers whose rounding would swamp an r of 1e-5 at a high temperature; then
// p and q normalised in place, u_i (kd_shift_difference) into zt and r_i = (u_i - log_ratio) / Ts
// into zs. Returns log_ratio. Its own function, so the loader picks its vector ISA.
template <typename acc_t, typename scalar_t>
KDOPS_CPU_CLONES acc_t kd_row_shifts(const scalar_t* s, const scalar_t* t, int64_t len, SoftmaxNorm<acc_t> norm_s,
                                     SoftmaxNorm<acc_t> norm_t, const KDTemperatures<acc_t>& temps, acc_t* pt,
                                     acc_t* qs, acc_t* zt, acc_t* zs) {
  const acc_t mt = norm_t.max, ms = norm_s.max, ts = temps.ts, ratio = temps.ratio;
  const auto dt = [&](int64_t i) { return static_cast<acc_t>(t[i]) - mt; };
  const auto ds = [&](int64_t i) { return static_cast<acc_t>(s[i]) - ms; };
  const double d = chunked_sum<acc_t>(len, [&](int64_t i) {
    return kd_scaled_exp_difference(dt(i), zt[i], pt[i], ds(i), zs[i], qs[i], ts, ratio);
  });
  const acc_t lr = static_cast<acc_t>(kd_scaled_log_ratio(d, norm_s.sum, temps.ts_d));
  normalise(pt, len, norm_t.sum);
  normalise(qs, len, norm_s.sum);
  KDOPS_SIMD
  for (int64_t i = 0; i < len; ++i) {
    const acc_t ui = kd_shift_difference(dt(i), ds(i), ratio);
    zt[i] = ui;
    zs[i] = divided(ui - lr, ts);
  }
  return lr;
}

// One row of listwise KD in units of Ts (common/plackett_luce.h): p = softmax(t / Tt) and
// q = softmax(s / Ts) over its len items (p in x, q in e), u_i (kd_shift_difference) in m and
// r_i = v_i / Ts in terms, v_i = u_i - log_ratio (kd_row_shifts).
template <typename acc_t>
struct KDRow {
  const acc_t *p, *q, *u, *r;
  acc_t log_ratio;

  template <typename scalar_t>
  KDRow(const scalar_t* s, const scalar_t* t, int64_t len, const KDTemperatures<acc_t>& temps,
        RowScratch<acc_t>& b) {
    for (auto* buf : {&b.x, &b.e, &b.m, &b.terms}) buf->resize(len);
    acc_t *pt = b.x.data(), *qs = b.e.data(), *zt = b.m.data(), *zs = b.terms.data();
    const auto norm_t = softmax_row(t, len, temps.tt, zt, pt);
    const auto norm_s = softmax_row(s, len, temps.ts, zs, qs);
    log_ratio = kd_row_shifts(s, t, len, norm_s, norm_t, temps, pt, qs, zt, zs);
    p = pt;
    q = qs;
    u = zt;
    r = zs;
  }
};

// The sum of the row's KL terms kd_term<kLossUnits>.
template <bool kLossUnits, typename acc_t>
KDOPS_CPU_CLONES double row_kl_terms(const KDRow<acc_t>& row, int64_t len, acc_t ts) {
  const acc_t *p = row.p, *q = row.q, *u = row.u, *r = row.r, lr = row.log_ratio;
  return chunked_sum<acc_t>(len, [&](int64_t i) { return kd_term<kLossUnits>(p[i], q[i], u[i] - lr, r[i], ts); });
}

// The row's loss Ts^2 KL.
template <typename acc_t>
acc_t row_kd_loss(const KDRow<acc_t>& row, int64_t len, const KDTemperatures<acc_t>& temps) {
  const double terms = temps.ts_d >= 1 ? row_kl_terms<true>(row, len, temps.ts)
                                       : row_kl_terms<false>(row, len, temps.ts);
  return static_cast<acc_t>(kd_row_loss(terms, temps.ts_d, len == 0));
}

// One row's gradients: Ts (q - p) into grad_s, and (Ts^2 / Tt) p (r - KL) into grad_t when
// given, each times the upstream g; padding columns [len, n) get 0.
template <typename acc_t, typename scalar_t>
KDOPS_CPU_CLONES void kd_row_grads(const KDRow<acc_t>& row, int64_t len, int64_t n, acc_t g,
                                   acc_t ts, acc_t ratio, scalar_t* grad_s, scalar_t* grad_t) {
  const acc_t *p = row.p, *q = row.q, *u = row.u, *r = row.r, lr = row.log_ratio;
  KDOPS_SIMD
  for (int64_t i = 0; i < len; ++i) grad_s[i] = static_cast<scalar_t>(g * kd_student_grad(p[i], q[i], u[i] - lr, r[i], ts));
  std::fill(grad_s + len, grad_s + n, scalar_t(0));
  if (grad_t == nullptr) return;
  const acc_t mean_u = static_cast<acc_t>(chunked_sum<acc_t>(len, [&](int64_t i) { return kd_weighted_shift(p[i], u[i]); }));
  KDOPS_SIMD
  for (int64_t i = 0; i < len; ++i) grad_t[i] = static_cast<scalar_t>(g * kd_teacher_grad(p[i], u[i], mean_u, ratio));
  std::fill(grad_t + len, grad_t + n, scalar_t(0));
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
    const KDTemperatures<acc_t> temps(a.ts, a.tt);
    backward_rows<scalar_t>(grad, v.B, v.n, red,
                            [&](int64_t b, acc_t g, RowScratch<acc_t>& scratch) {
      const int64_t len = v.length(b);
      const KDRow<acc_t> row(v.row(b), t_p + b * v.n, len, temps, scratch);
      kd_row_grads(row, len, v.n, g, temps.ts, temps.ratio, gs + b * v.n, gt == nullptr ? nullptr : gt + b * v.n);
    });
  });
  return {grad_student, grad_teacher};
}

// listwise_kd_loss, and with_grads: the gradients listwise_kd_loss_backward gives at an upstream
// gradient of 1 (the teacher's when teacher_grad), from the same two softmaxes
// (listwise_kd_loss_and_grads). Returns loss, d student ([0, n] without with_grads), d teacher.
std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_rows(
    const at::Tensor& student, const at::Tensor& teacher, const c10::optional<at::Tensor>& lengths,
    double ts, double tt, c10::string_view reduction, bool with_grads, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const auto a = kd_args(student, teacher, lengths, ts, tt);
  const auto opts = a.rows.scores.options();
  at::Tensor grad_student = at::empty({with_grads ? a.rows.B : 0, a.rows.n}, opts);
  at::Tensor grad_teacher = at::empty({with_grads && teacher_grad ? a.rows.B : 0, a.rows.n}, opts);
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(),
                                  "listwise_kd_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.rows.view<scalar_t>();
    const scalar_t* t_p = a.teacher.data_ptr<scalar_t>();
    scalar_t* gs = with_grads ? grad_student.data_ptr<scalar_t>() : nullptr;
    scalar_t* gt = with_grads && teacher_grad ? grad_teacher.data_ptr<scalar_t>() : nullptr;
    const KDTemperatures<acc_t> temps(a.ts, a.tt);
    const acc_t g = unit_row_grad<acc_t>(red, v.B);
    loss = reduce_rows<scalar_t>(v.B, v.n, red, opts, [&](int64_t b, RowScratch<acc_t>& scratch) -> acc_t {
      const int64_t len = v.length(b);
      const KDRow<acc_t> row(v.row(b), t_p + b * v.n, len, temps, scratch);
      if (gs != nullptr) {
        kd_row_grads(row, len, v.n, g, temps.ts, temps.ratio, gs + b * v.n, gt == nullptr ? nullptr : gt + b * v.n);
      }
      return row_kd_loss(row, len, temps);
    });
  });
  return {loss, grad_student, grad_teacher};
}

at::Tensor listwise_kd_loss_cpu(const at::Tensor& student, const at::Tensor& teacher,
                                const c10::optional<at::Tensor>& lengths, double ts, double tt,
                                c10::string_view reduction) {
  return std::get<0>(kd_rows(student, teacher, lengths, ts, tt, reduction, false, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> listwise_kd_loss_and_grads_cpu(
    const at::Tensor& student, const at::Tensor& teacher, const c10::optional<at::Tensor>& lengths,
    double ts, double tt, c10::string_view reduction, bool teacher_grad) {
  return kd_rows(student, teacher, lengths, ts, tt, reduction, true, teacher_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) {
  m.impl("plackett_luce_loss", &plackett_luce_loss_cpu);
  m.impl("plackett_luce_loss_backward", &plackett_luce_loss_backward_cpu);
  m.impl("listmle", &listmle_cpu);
  m.impl("listmle_and_grads", &listmle_and_grads_cpu);
  m.impl("pld_loss", &pld_loss_cpu);
  m.impl("pld_loss_backward", &pld_loss_backward_cpu);
  m.impl("pld_loss_and_grads", &pld_loss_and_grads_cpu);
  m.impl("listwise_kd_loss", &listwise_kd_loss_cpu);
  m.impl("listwise_kd_loss_backward", &listwise_kd_loss_backward_cpu);
  m.impl("listwise_kd_loss_and_grads", &listwise_kd_loss_and_grads_cpu);
}

}  // namespace kdops::cpu
