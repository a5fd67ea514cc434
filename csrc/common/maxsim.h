// ColBERT MaxSim: score(q, k) = sum_i max_j <Q[q, i], D_k[j]> over valid query tokens i and valid
// doc tokens j (Khattab & Zaharia 2020).
//
// One view serves the three public layouts. The doc tokens always form one [T, d] matrix of
// token rows, and doc `k` of query `q` (output column k) is a contiguous run of rows:
//   all pairs    D[Nd, Ld, d]     doc(q, k) = k          rows [k * Ld, (k + 1) * Ld)
//   per query    D[Nq, K, Ld, d]  doc(q, k) = q * K + k  rows [doc * Ld, (doc + 1) * Ld)
//   packed       D_tokens[T, d]   doc(q, k) = k          rows [offsets[k], offsets[k + 1])
// Docs are disjoint and stored in order, so a run of consecutive docs is a run of rows too.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace kdops {

struct MaxSimLayout {
  const int64_t* offsets;  // packed: [Nd + 1]; nullptr for the padded layouts
  int64_t Ld;              // padded doc length (unused when packed)
  int64_t K;               // output columns: docs per query
  int64_t num_docs;        // distinct docs: Nd, or Nq * K per query
  bool per_query;
  int64_t T;               // token rows of D (packed: the bound of every offset)

  KDOPS_HD int64_t doc(int64_t q, int64_t k) const { return per_query ? q * K + k : k; }
  // Packed docs are clamped into [0, T], end >= start: on device memory the offsets are checked
  // by a device-side assert, which fails only after the kernels ran, so the kernels must stay
  // inside D_tokens whatever the offsets hold. (Valid offsets pass unchanged.)
  KDOPS_HD int64_t start(int64_t doc) const {
    return offsets != nullptr ? clamp_offset(offsets[doc], 0) : doc * Ld;
  }
  KDOPS_HD int64_t length(int64_t doc) const {
    if (offsets == nullptr) return Ld;
    const int64_t first = start(doc);
    return clamp_offset(offsets[doc + 1], first) - first;
  }
  KDOPS_HD int64_t clamp_offset(int64_t offset, int64_t low) const {
    return offset < low ? low : (offset > T ? T : offset);
  }
  // The (query, column) pairs that read doc u, in a fixed order: for backward, where each doc
  // gathers its gradient from exactly these pairs (no atomics, deterministic).
  KDOPS_HD int64_t num_readers(int64_t u, int64_t Nq) const { return per_query ? 1 : Nq; }
  KDOPS_HD void reader(int64_t u, int64_t n, int64_t& q, int64_t& k) const {
    if (per_query) {
      q = u / K;
      k = u - q * K;
    } else {
      q = n;
      k = u;
    }
  }
};

template <typename scalar_t>
struct MaxSimView {
  const scalar_t* Q;       // [Nq, Lq, d] contiguous
  const scalar_t* D;       // [T, d] contiguous token rows
  const bool* q_mask;      // [Nq, Lq] contiguous or nullptr (all valid)
  const bool* d_mask;      // [T] contiguous or nullptr (all valid; always nullptr when packed)
  int64_t Nq, Lq, dim;
  MaxSimLayout layout;

  KDOPS_HD bool query_token_valid(int64_t q, int64_t i) const {
    return q_mask == nullptr || q_mask[q * Lq + i];
  }
  KDOPS_HD bool doc_token_valid(int64_t row) const { return d_mask == nullptr || d_mask[row]; }
  // Flat index of argmax[q, k, i] in the saved [Nq, K, Lq] indices (int64: Nq*K*Lq can pass 2^31).
  KDOPS_HD int64_t argmax_index(int64_t q, int64_t k, int64_t i) const {
    return (q * layout.K + k) * Lq + i;
  }
};

// The order of the max: NaN ranks above every number (as in torch.max, a NaN similarity makes
// the max NaN instead of being skipped and hiding a diverged model), and NaNs tie with each other.
template <typename acc_t>
KDOPS_HD bool ranks_above(acc_t v, acc_t value) {
  return v > value || (v != v && value == value);
}
template <typename acc_t>
KDOPS_HD bool ranks_equal(acc_t v, acc_t value) {
  return v == value || (v != v && value != value);
}

// The running max of one query token over the doc tokens seen so far, and the first token that
// reached it: scanning tokens in increasing j, only a token that ranks strictly above replaces
// it, which keeps the first maximal index, the tie rule backward relies on. index -1 = no valid
// token yet; the first valid token always takes it.
template <typename acc_t>
KDOPS_HD bool takes_max(acc_t v, acc_t value, int32_t index) {
  return index < 0 || ranks_above(v, value);
}

template <typename acc_t>
struct RunningMax {
  acc_t value;
  int32_t index;

  KDOPS_HD void update(acc_t v, int32_t j) {
    if (takes_max(v, value, index)) {
      value = v;
      index = j;
    }
  }
  // Combine with the max of another subset of the tokens: the larger value wins, the smaller
  // index on a tie, so splitting the tokens among threads gives the sequential answer.
  KDOPS_HD void merge(acc_t v, int32_t j) {
    if (j < 0) return;
    if (index < 0 || ranks_above(v, value) || (ranks_equal(v, value) && j < index)) {
      value = v;
      index = j;
    }
  }
  // What the token adds to the score: its max, or 0 when the doc had no valid token.
  KDOPS_HD acc_t contribution() const { return index >= 0 ? value : acc_t(0); }
};

// Whether a saved argmax entry j names a token of a doc of `length` tokens; -1 (no valid token,
// or a masked query token) is the only other value maxsim returns. Backward trusts nothing it
// is given: maxsim_backward is a public op, and an argmax from another call would otherwise
// read and write outside D. The CPU kernels raise on a bad index; the CUDA kernels skip it
// (raising there would need a device sync), so it adds nothing to the gradient.
KDOPS_HD bool argmax_in_doc(int32_t j, int64_t length) { return j >= 0 && j < length; }

template <typename acc_t>
KDOPS_HD RunningMax<acc_t> empty_running_max() {
  return {acc_t(0), -1};
}

}  // namespace kdops
