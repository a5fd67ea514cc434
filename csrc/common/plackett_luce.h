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
//   d loss / d teacher_c = (1/T) * w_c * (term_c - loss),  term_c the term of class c.
// Listwise KD: loss = Ts^2 * sum_i p_i (log p_i - log q_i), p = softmax(t/Tt), q = softmax(s/Ts):
//   d / d s_i = Ts * (q_i - p_i),   d / d t_i = (Ts^2 / Tt) * p_i * (log p_i - log q_i - KL).
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

// log sum exp over a growing set, with a running max so that no exp overflows (scores of 1e4)
// and a set far below its max keeps its exact log (no log(0)). -inf items add nothing, so an
// empty or all -inf set stays at -inf without NaNs.
template <typename acc_t>
struct LogSumExp {
  acc_t max = neg_inf<acc_t>();
  acc_t sum = 0;  // sum of exp(x - max)

  // Adds x. p = exp(x - lse_new) and q = 1 - p = exp(lse_old - lse_new), both computed without
  // cancellation (q is the ratio C_j's recurrence needs).
  KDOPS_HD void push(acc_t x, acc_t& p, acc_t& q) {
    if (x == neg_inf<acc_t>()) {
      p = 0;
      q = 1;
      return;
    }
    acc_t rest, e;
    if (x > max) {
      rest = sum == 0 ? acc_t(0) : sum * fast_exp(max - x);
      e = 1;
      max = x;
    } else {
      rest = sum;
      e = fast_exp(x - max);
    }
    sum = rest + e;
    p = e / sum;
    q = rest / sum;
  }

  KDOPS_HD void push(acc_t x) {
    acc_t p, q;
    push(x, p, q);
  }

  // Union of two sets (associative: the combine of a parallel scan).
  KDOPS_HD LogSumExp merged(const LogSumExp& o) const {
    if (o.sum == 0) return *this;
    if (sum == 0) return o;
    LogSumExp r;
    r.max = max > o.max ? max : o.max;
    r.sum = sum * fast_exp(max - r.max) + o.sum * fast_exp(o.max - r.max);
    return r;
  }

  KDOPS_HD acc_t value() const { return sum == 0 ? neg_inf<acc_t>() : max + fast_log(sum); }
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

// The exponent of a term exp(x - m) against a max m >= x: equal values (-inf included) give 0,
// so an all -inf suffix never computes -inf - -inf.
// (float blends with a bit mask, so that CPU loops over it stay branch-free and vectorise.)
KDOPS_MATH float shifted(float x, float m) {
  return float_from_bits(bits_of_float(x - m) & ~mask(x == m));
}
KDOPS_MATH double shifted(double x, double m) { return x == m ? 0.0 : x - m; }

// d loss / d s[pi_j] = C_j * p_j - w_j [j<K]
template <typename acc_t>
KDOPS_HD acc_t pl_score_grad(acc_t c, acc_t p, acc_t w_here) {
  return c * p - w_here;
}

// The ranking order of ListMLE (by relevance) and PLD (by teacher logit): a higher key first,
// ties to the lower index; NaN ranks above everything (as in torch.sort) so the order is total.
// Keys are mapped to an order-preserving unsigned image (smaller = ranked earlier; -0 ties +0),
// so the order is the plain lexicographic (image, index) order on both CPU and GPU. Half and
// bfloat16 keys are ranked through float, which keeps their order.
KDOPS_HD uint32_t rank_image(float x) {
  if (x != x) return 0u;
  if (x == 0.0f) x = 0.0f;
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~ascending;  // never 0 for a non-NaN
}

KDOPS_HD uint64_t rank_image(double x) {
  if (x != x) return 0u;
  if (x == 0.0) x = 0.0;
  uint64_t u;
  memcpy(&u, &x, sizeof(u));
  const uint64_t sign = uint64_t(1) << 63;
  const uint64_t ascending = (u & sign) ? ~u : (u | sign);
  return ~ascending;
}

template <typename image_t>
struct RankKey {
  image_t image;
  int64_t index;
  KDOPS_HD bool operator<(const RankKey& o) const {
    return image < o.image || (image == o.image && index < o.index);
  }
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

  KDOPS_HD int64_t length(int64_t b) const { return lengths == nullptr ? n : lengths[b]; }
  KDOPS_HD int64_t terms(int64_t b) const {
    const int64_t len = length(b);
    return top_k < len ? top_k : len;
  }
  KDOPS_HD const scalar_t* row(int64_t b) const { return scores + b * n; }
};

// Listwise KD per item, from p_i, q_i and their logs (log p_i = t_i / Tt - lse_t, likewise q):
// the term p_i (log p_i - log q_i), 0 where p_i = 0 (the limit), and its gradients given the
// row's KL = sum of the terms.
template <typename acc_t>
KDOPS_HD acc_t kl_term(acc_t p, acc_t log_p, acc_t log_q) {
  return p == 0 ? acc_t(0) : p * (log_p - log_q);
}

// d (Ts^2 KL) / d s_i = Ts (q_i - p_i)
template <typename acc_t>
KDOPS_HD acc_t kl_student_grad(acc_t p, acc_t q, acc_t ts) {
  return ts * (q - p);
}

// d (Ts^2 KL) / d t_i = (Ts^2 / Tt) p_i (log p_i - log q_i - KL)
template <typename acc_t>
KDOPS_HD acc_t kl_teacher_grad(acc_t p, acc_t log_p, acc_t log_q, acc_t kl, acc_t ts, acc_t tt) {
  return p == 0 ? acc_t(0) : ts * ts / tt * p * (log_p - log_q - kl);
}

}  // namespace kdops
