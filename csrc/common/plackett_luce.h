// Plackett-Luce listwise losses: the per-element and per-row math shared by the CPU and CUDA
// kernels.
//
// For scores s and a ranking pi (best first) of a row's L valid items, the weighted PL negative
// log-likelihood over the first K positions (Plackett 1975, Luce 1959; ListMLE: Xia et al. 2008)
//   loss = sum_{k<K} w_k * (lse_k - s[pi_k]),   lse_k = log sum_{j>=k} exp(s[pi_j]).
// With p_j = exp(s[pi_j] - lse_j), the probability that pi_j is picked first among pi_j.., its
// gradient, scattered back through pi, is
//   d loss / d s[pi_j] = C_j * p_j - w_j [j<K],
//   C_j = sum_{k<=min(j,K-1)} w_k exp(lse_j - lse_k) = C_{j-1} * (1 - p_{j-1}) + w_j [j<K],
// because exp(lse_j - lse_{j-1}) = 1 - p_{j-1}; and d loss / d w_k = lse_k - s[pi_k].
// PLD (Plackett-Luce Distillation) takes w_k = softmax(teacher / T)[pi_k]; through the weights,
//   d loss / d teacher_c = w_c * (term_c - loss) / T,  term_c the term of class c.
// Listwise KD: loss = Ts^2 * sum_i p_i (log p_i - log q_i), p = softmax(t/Tt), q = softmax(s/Ts):
//   d / d s_i = Ts * (q_i - p_i),   d / d t_i = (Ts^2 / Tt) * p_i * (log p_i - log q_i - KL);
// summed as non-negative terms (kd_term, below).
//
// Temperatures: any T in (0, inf) of the double the op takes, in every accumulation type. No
// kernel forms 1/T, x/T or T^2, which overflow (fp32: T < 2.9e-39 or T >= 1.9e19) or underflow
// where the result does not: a softmax at T is taken from z_i = (x_i - max) / T (tempered), the
// max items' z exactly 0, so T -> 0 gives the hard max with ties shared (the other z reach
// -inf) and T -> inf the uniform distribution (every z reaches 0). Listwise KD works in units
// of Ts (kd_* below): v_i = Ts (log p_i - log q_i) and Ts^2 KL stay finite where the loss is.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/fast_math.h"
#include "common/macros.h"

namespace kdops {

// float: the device's expf/logf on the GPU, the vectorisable polynomials of fast_math.h on the
// CPU (arguments: exp of x <= 0, log of sums >= 1). double: the C library.
KDOPS_MATH float fast_exp(float x) {
#ifdef __CUDA_ARCH__
  return expf(x);
#else
  return poly_expf(x);
#endif
}
KDOPS_MATH float fast_log(float x) {
#ifdef __CUDA_ARCH__
  return logf(x);
#else
  return poly_logf(x);
#endif
}
KDOPS_MATH double fast_exp(double x) { return exp(x); }
KDOPS_MATH double fast_log(double x) { return log(x); }

template <typename acc_t>
KDOPS_HD acc_t neg_inf() {
  return -std::numeric_limits<acc_t>::infinity();
}

// x, or 0 where c. float blends with a bit mask: CPU loops over it stay branch-free and
// vectorise (a ?: around float arithmetic becomes a branch).
KDOPS_MATH float zero_where(bool c, float x) { return float_from_bits(bits_of_float(x) & ~mask(c)); }
KDOPS_MATH double zero_where(bool c, double x) { return c ? 0.0 : x; }

// The exponent of a term exp(x - m) against a max m >= x: equal values (-inf included) give 0,
// so an all -inf suffix never computes -inf - -inf.
template <typename acc_t>
KDOPS_MATH acc_t shifted(acc_t x, acc_t m) {
  return zero_where(x == m, x - m);
}

// (x - m) / t, the exponent of x's term in a softmax at temperature t against the row's max
// m >= x: 0 where x == m (the max items, -inf items of an all -inf set), so no x / t is formed
// that could overflow, and a t that rounds to 0 or inf in acc_t still gives the limits.
template <typename acc_t>
KDOPS_MATH acc_t tempered(acc_t x, acc_t m, acc_t t) {
  return zero_where(x == m, (x - m) / t);
}

// a / t, 0 where a == 0 (where t rounded to 0 in acc_t, 0 / 0 would be NaN).
template <typename acc_t>
KDOPS_MATH acc_t divided(acc_t a, acc_t t) {
  return zero_where(a == 0, a / t);
}

// The max a softmax is shifted by: a row whose max is not finite (all -inf, or a +inf item,
// whose softmax is inf - inf; NaN items are skipped by the max) has no softmax, so its max
// becomes NaN and every exponent with it: the row is NaN (as torch.softmax gives), and a teacher
// that diverged never turns into uniform or one-hot weights.
template <typename acc_t>
KDOPS_MATH acc_t softmax_max(acc_t m) {
  return m - m == 0 ? m : std::numeric_limits<acc_t>::quiet_NaN();
}

// log sum exp of a set as (max, sum of exp(x - max)): a running max, so that no exp overflows
// (scores of 1e4) and a set far below its max keeps its exact log (no log(0)). The union of two
// sets is associative (the combine of the CUDA kernels' block scans); -inf items never compute
// -inf - -inf (see shifted).
template <typename acc_t>
struct LogSumExp {
  acc_t max = neg_inf<acc_t>();
  acc_t sum = 0;  // 0: the empty set

  KDOPS_HD static LogSumExp item(acc_t x) { return {x, acc_t(1)}; }

  KDOPS_HD LogSumExp merged(const LogSumExp& o) const {
    if (o.sum == 0) return *this;
    if (sum == 0) return o;
    LogSumExp r;
    r.max = max > o.max ? max : o.max;
    r.sum = sum * fast_exp(shifted(max, r.max)) + o.sum * fast_exp(shifted(o.max, r.max));
    return r;
  }

  KDOPS_HD acc_t value() const { return sum == 0 ? neg_inf<acc_t>() : max + fast_log(sum); }

  // The union at temperature t: sum holds sum exp((x - max) / t) (tempered), so the set's
  // softmax at t is exp(tempered(x, max, t)) / sum.
  KDOPS_HD LogSumExp merged_at(const LogSumExp& o, acc_t t) const {
    if (o.sum == 0) return *this;
    if (sum == 0) return o;
    LogSumExp r;
    r.max = max > o.max ? max : o.max;
    r.sum = sum * fast_exp(tempered(max, r.max, t)) + o.sum * fast_exp(tempered(o.max, r.max, t));
    return r;
  }
};

// The scan state of C_j (above) as an affine map C -> a * C + b; composing maps in order is
// associative, so a block can scan them in parallel.
template <typename acc_t>
struct Affine {
  acc_t a = 1;
  acc_t b = 0;
  // this, then o
  KDOPS_HD Affine then(const Affine& o) const { return {a * o.a, b * o.a + o.b}; }
};

// d loss / d s[pi_j] = C_j * p_j - w_j [j<K]
template <typename acc_t>
KDOPS_HD acc_t pl_score_grad(acc_t c, acc_t p, acc_t w_here) {
  return c * p - w_here;
}

// The ranking order of ListMLE (by relevance) and PLD (by teacher logit): a higher key first,
// ties to the lower index; NaN ranks above every number (as in torch.sort) so the order is total.
// Keys map to an order-preserving unsigned image (smaller = ranked earlier; -0 ties +0), so the
// order is the plain lexicographic (image, index) order on CPU and GPU. Image 0 is reserved for an
// item forced first (PLD's true class) and all-ones for padding (after every item, in index
// order). Half and bfloat16 keys are ranked through float, which keeps their order.
KDOPS_MATH uint32_t rank_image(float x) {
  const uint32_t u = bits_of_float(x + 0.0f);  // -0 + 0 = +0
  // Flip to an ascending image (negatives: all bits; positives: the sign bit), then invert.
  const uint32_t image = ~(u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u));
  const uint32_t m_nan = mask(x != x);
  return (image & ~m_nan) | (1u & m_nan);  // a number: in [0x007fffff, 0xff800000]
}

KDOPS_HD uint64_t rank_image(double x) {
  if (x != x) return 1u;
  if (x == 0.0) x = 0.0;
  uint64_t u;
  memcpy(&u, &x, sizeof(u));
  const uint64_t sign = uint64_t(1) << 63;
  const uint64_t ascending = (u & sign) ? ~u : (u | sign);
  return ~ascending;
}

template <typename acc_t>
struct RankKeyOf;

// float: image and index packed in one uint64 (image high), so a comparison is one integer
// compare and a key 8 bytes (rows hold fewer than 2^31 items, checked on the host).
template <>
struct RankKeyOf<float> {
  using type = uint64_t;
  static constexpr int kImageBytes = 4;
  KDOPS_HD static type pack(uint32_t image, int64_t i) { return uint64_t(image) << 32 | uint64_t(i); }
  KDOPS_HD static type make(float x, int64_t i) { return pack(rank_image(x), i); }
  KDOPS_HD static type first(int64_t i) { return pack(0u, i); }
  KDOPS_HD static type padding(int64_t i) { return pack(0xffffffffu, i); }
  KDOPS_HD static int64_t index(type k) { return static_cast<int64_t>(k & 0xffffffffu); }
  KDOPS_HD static unsigned digit(type k, int p) { return (k >> (32 + 8 * p)) & 0xff; }
};

template <typename image_t>
struct RankKey {
  image_t image;
  int64_t index;
  KDOPS_HD bool operator<(const RankKey& o) const {
    return image < o.image || (image == o.image && index < o.index);
  }
};

template <>
struct RankKeyOf<double> {
  using type = RankKey<uint64_t>;
  static constexpr int kImageBytes = 8;
  KDOPS_HD static type make(double x, int64_t i) { return {rank_image(x), i}; }
  KDOPS_HD static type first(int64_t i) { return {0u, i}; }
  KDOPS_HD static type padding(int64_t i) { return {~uint64_t(0), i}; }
  KDOPS_HD static int64_t index(const type& k) { return k.index; }
  KDOPS_HD static unsigned digit(const type& k, int p) { return (k.image >> (8 * p)) & 0xff; }
};

// The rows every Plackett-Luce op reads: scores [B, n] (contiguous), each row's valid length
// (columns at or past it are padding and take no part) and the number of positions that add
// terms (top_k, clipped to the row's length).
template <typename scalar_t>
struct PLRowsView {
  const scalar_t* scores;
  const int64_t* lengths;  // [B] or nullptr: every row has n items
  int64_t B;
  int64_t n;
  int64_t top_k;

  // Clamped into [0, n]: the CUDA kernels check lengths on the device, asynchronously, so they
  // may run on unchecked values and must stay inside the row.
  KDOPS_HD int64_t length(int64_t b) const {
    const int64_t len = lengths == nullptr ? n : lengths[b];
    return len < 0 ? 0 : (len > n ? n : len);
  }
  KDOPS_HD int64_t terms(int64_t b) const {
    const int64_t len = length(b);
    return top_k < len ? top_k : len;
  }
  KDOPS_HD const scalar_t* row(int64_t b) const { return scores + b * n; }
};

// Listwise KD per item, from p_i, q_i and r_i = log p_i - log q_i. Because sum p = sum q = 1,
//   KL = sum_i p_i r_i = sum_i q_i phi(r_i),   phi(r) = r e^r - e^r + 1 = (r - 1) e^r + 1 >= 0,
// so the row's KL is a sum of terms that are each >= 0 and cannot cancel: the first form, at a
// high temperature (p ~ q, KL ~ 1e-9), is the difference of sums of O(1e-4) terms of both signs
// and loses every digit (negative KLs). Where |r| < 1/2, q phi(r) comes from phi's series (no
// cancellation at all); elsewhere from p (r - 1) + q, whose parts cancel by at most 10x there.
// A term of p = 0 is q (the limit; r may be -inf).
//
// In units of Ts: r_i is O(range / T), so at T = 1e30 neither r_i nor KL (O(r^2)) nor Ts^2 fits
// a float, while Ts^2 KL does. The kernels compute v_i = Ts r_i from the shifted logits
//   v_i = u_i - Ts log(S_t / S_s),   u_i = (Ts / Tt) (t_i - max_t) - (s_i - max_s),
// S the softmax sums (S_t / S_s from D = Ts (S_t - S_s), kd_scaled_log_ratio), r_i = v_i / Ts
// only where it is needed, and sum q_i Ts^2 phi(r_i) (Ts >= 1) or q_i Ts phi(r_i) (Ts < 1) as
// terms in v: the one of the two that neither overflows nor underflows first.
constexpr double kl_factorial(int k) { return k <= 1 ? 1.0 : k * kl_factorial(k - 1); }

// Series of phi(r) / r^2 = sum_{k>=2} (k - 1) r^(k-2) / k!, terms k = K..Kmax, by Horner.
template <int K, int Kmax, typename acc_t>
KDOPS_MATH acc_t kl_phi_series(acc_t r) {
  constexpr double c = (K - 1) / kl_factorial(K);
  if constexpr (K == Kmax) {
    return acc_t(c);
  } else {
    return acc_t(c) + r * kl_phi_series<K + 1, Kmax>(r);
  }
}

// Series of expm1(r) / r = sum_{k>=1} r^(k-1) / k!, terms k = K..Kmax, by Horner.
template <int K, int Kmax, typename acc_t>
KDOPS_MATH acc_t kl_expm1_series(acc_t r) {
  constexpr double c = 1 / kl_factorial(K);
  if constexpr (K == Kmax) {
    return acc_t(c);
  } else {
    return acc_t(c) + r * kl_expm1_series<K + 1, Kmax>(r);
  }
}

// Last series term for |r| < 1/2: its remainder is below the type's rounding (float 2^-24,
// double 2^-53).
template <typename acc_t>
constexpr int kl_series_terms() {
  return sizeof(acc_t) == sizeof(float) ? 10 : 17;
}

// c ? a : b, branch-free for float (see zero_where).
KDOPS_MATH float pick(bool c, float a, float b) {
  return float_from_bits((bits_of_float(a) & mask(c)) | (bits_of_float(b) & ~mask(c)));
}
KDOPS_MATH double pick(bool c, double a, double b) { return c ? a : b; }

KDOPS_MATH bool kl_small(float r) { return (bits_of_float(r) & 0x7fffffffu) < 0x3f000000u; }
KDOPS_MATH bool kl_small(double r) { return r > -0.5 && r < 0.5; }

// Ts (e_t - e_s) of one item, e = exp(z) of each side: z = (x - max) / T (tempered), d = x - max,
// ratio = Ts / Tt. Where both |z| < 1/2 it is Ts (expm1(z_t) - expm1(z_s)), each Ts expm1(z) as
// d Ts / T times the series of expm1(z) / z: e_t - e_s would keep only the absolute error of each e,
// all that is left of an item at T = 1e30 (z ~ 1e-30). Summed over a row, D of
// kd_scaled_log_ratio.
template <typename acc_t>
KDOPS_MATH acc_t kd_scaled_exp_difference(acc_t dt, acc_t zt, acc_t et, acc_t ds, acc_t zs, acc_t es,
                                          acc_t ts, acc_t ratio) {
  constexpr int N = kl_series_terms<acc_t>();
  const acc_t series = zero_where(dt == 0, dt * ratio) * kl_expm1_series<1, N>(zt) - ds * kl_expm1_series<1, N>(zs);
  return pick(kl_small(zt) & kl_small(zs), series, ts * (et - es));
}

// Ts log(S_t / S_s) from D = Ts (S_t - S_s) and S_s >= 1, in double (once per row): with
// y = S_t / S_s - 1 = D / (Ts S_s), it is (D / S_s) log1p(y) / y, so a y of 1e-30 (T = 1e30)
// keeps its digits, where Ts log(S_t / S_s) of the two sums would be 1e30 times their rounding.
KDOPS_HD double kd_scaled_log_ratio(double d, double sum_s, double ts) {
  const double y = d / ts / sum_s;
  return y == 0 ? d / sum_s : (d / sum_s) * (log1p(y) / y);
}

// u_i = (Ts / Tt) (t_i - max_t) - (s_i - max_s), so that v_i = Ts r_i = u_i - log_ratio (of
// kd_scaled_log_ratio). dt = 0 (the teacher's max items) adds 0 also where Ts / Tt is inf.
template <typename acc_t>
KDOPS_MATH acc_t kd_shift_difference(acc_t dt, acc_t ds, acc_t ratio) {
  return zero_where(dt == 0, dt * ratio) - ds;
}

// The KL term of one item >= 0, from p, q, v = Ts r and r = v / Ts (divided): q Ts^2 phi(r) when
// kLossUnits (Ts >= 1), else q Ts phi(r) (Ts < 1, times Ts once summed: kd_row_loss). Each form
// is a product of v, p, q and Ts alone, so it overflows only where the term does.
template <bool kLossUnits, typename acc_t>
KDOPS_MATH acc_t kd_term(acc_t p, acc_t q, acc_t v, acc_t r, acc_t ts) {
  const acc_t f = kLossUnits ? ts : acc_t(1);
  const acc_t series = q * v * (kLossUnits ? v : r) * kl_phi_series<2, kl_series_terms<acc_t>()>(r);
  const acc_t direct = f * (p * v + (q - p) * ts);  // Ts^2 (p (r - 1) + q) = Ts (p v + (q - p) Ts)
  const acc_t term = pick(p == 0, f * (ts * q), pick(kl_small(r), series, direct));
  return pick(term < 0, acc_t(0), term);  // only rounding makes a term < 0 (phi >= 0)
}

// A row's loss Ts^2 KL from the sum of its kd_term<Ts >= 1> terms, in double; a row of no items
// adds 0.
KDOPS_HD double kd_row_loss(double terms, double ts, bool empty) {
  return empty ? 0.0 : (ts >= 1 ? terms : terms * ts);
}

// d (Ts^2 KL) / d s_i = Ts (q_i - p_i) = -q_i v_i expm1(r_i) / r_i: the series where |r| < 1/2,
// where q - p from the two rounded probabilities would lose digits.
template <typename acc_t>
KDOPS_MATH acc_t kd_student_grad(acc_t p, acc_t q, acc_t v, acc_t r, acc_t ts) {
  const acc_t series = -q * v * kl_expm1_series<1, kl_series_terms<acc_t>()>(r);
  return pick(kl_small(r), series, ts * (q - p));
}

// p_i u_i, 0 where p_i = 0 (u_i may be -inf there): summed over the row, the mean_u of
// kd_teacher_grad.
template <typename acc_t>
KDOPS_MATH acc_t kd_weighted_shift(acc_t p, acc_t u) {
  return zero_where(p == 0, p * u);
}

// d (Ts^2 KL) / d t_i = (Ts^2 / Tt) p_i (r_i - KL) = (Ts / Tt) p_i (u_i - sum_j p_j u_j), since
// Ts KL = sum_j p_j v_j and v = u - log_ratio with sum p = 1: log_ratio cancels, and a one-hot p
// (a teacher at T -> 0) gives exactly 0, where (Ts / Tt) times the rounding of a KL would be
// 1e30 times it. 0 where p_i = 0; ratio = Ts / Tt, mean_u = sum_j p_j u_j.
template <typename acc_t>
KDOPS_MATH acc_t kd_teacher_grad(acc_t p, acc_t u, acc_t mean_u, acc_t ratio) {
  const acc_t x = zero_where(p == 0, p * (u - mean_u));
  return zero_where(x == 0, ratio * x);
}

// PLD's d loss / d t_c = w_c (term_c - loss) / T, times the upstream g: divided last, so that
// neither 1/T nor g / T is formed.
template <typename acc_t>
KDOPS_MATH acc_t pld_teacher_grad_of(acc_t g, acc_t w, acc_t term, acc_t loss, acc_t t) {
  return divided(g * w * (term - loss), t);
}

// A learned temperature's gradient (the ops' tensor temperatures). A loss that depends on logits
// x only through x / T has dL/dT = -(1/T) sum_i x_i dL/dx_i (the chain rule through x_i / T).
// One item's share of that sum: x centred on its row's max m (the gradient of a softmax sums to 0
// over the row, so the shift changes only rounding, and scores of 1e4 leave no O(1e4 g) products
// to cancel), 0 for an item of zero gradient (padding, whose score may be anything, or a -inf
// item of p = 0).
template <typename acc_t>
KDOPS_MATH acc_t temperature_dot_term(acc_t x, acc_t m, acc_t grad) {
  return zero_where(grad == 0, (x - m) * grad);
}

// -(1/T) sum_i x_i dL/dx_i from that sum: the teacher temperature of listwise KD, PLD's.
template <typename acc_t>
KDOPS_MATH acc_t logits_temperature_grad(acc_t dot, acc_t t) {
  return divided(-dot, t);
}

// Listwise KD's student temperature: L = Ts^2 KL(.. || softmax(s / Ts)), so dL/dTs =
// (2 L - sum_i s_i dL/ds_i) / Ts, with L and the dL/ds_i at the same upstream gradient.
template <typename acc_t>
KDOPS_MATH acc_t student_temperature_grad(acc_t loss, acc_t dot, acc_t ts) {
  return divided(2 * loss - dot, ts);
}

}  // namespace kdops
