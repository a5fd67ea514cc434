// MaxSim CPU kernels. Math and layouts: common/maxsim.h.
//
// Forward: the (query, doc) pairs are cut into work items, each a block of whole queries against
// a run of consecutive docs (whose token rows are consecutive too). An item packs its query token
// rows into panels and runs the fused panel kernel (maxsim_panel.h: similarities and their max
// in registers, the ISA picked at run time) over each doc. Memory beyond the outputs is the
// item's packed rows, maxima and (half inputs) converted doc rows: never Nq x Nd x Lq x Ld.
//
// Backward, from the saved argmax (deterministic, no atomics):
//   dQ[q, i] = sum_k w[q, k] * D_doc(q,k)[argmax[q, k, i]]      (a gather per query)
//   dD_u[j]  = sum over readers (q, k) of doc u, and i with argmax[q, k, i] == j, of w[q, k] * Q[q, i]
// where w = upstream gradient (/ query length when length_normalize); each doc is owned by one
// thread, which visits its readers in a fixed order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/maxsim_inputs.h"
#include "cpu/maxsim_panel.h"

namespace kdops::cpu {
namespace {

constexpr int64_t kRowsPerItem = 256;    // query token rows per item (whole queries, at least one)
constexpr int64_t kTokensPerItem = 4096;  // doc token rows per item (whole docs, at least one)
constexpr int64_t kBlockElems = 16384;  // doc token elements per block (64 KiB fp32)

// How the [Nq, K] pairs are cut into items: query blocks x column blocks. A per-query item holds
// one query (its docs are its own); an all-pairs or packed item shares its docs across queries.
struct WorkPlan {
  int64_t queries_per_item, columns_per_item, query_items, column_items;

  WorkPlan(const MaxSimLayout& l, int64_t Nq, int64_t Lq, int64_t T) {
    queries_per_item = l.per_query ? 1 : std::max<int64_t>(1, kRowsPerItem / std::max<int64_t>(Lq, 1));
    const int64_t mean_length = std::max<int64_t>(1, T / std::max<int64_t>(l.num_docs, 1));
    columns_per_item = std::clamp<int64_t>(kTokensPerItem / mean_length, 1, std::max<int64_t>(l.K, 1));
    query_items = (Nq + queries_per_item - 1) / queries_per_item;
    column_items = (l.K + columns_per_item - 1) / columns_per_item;
  }
  int64_t items() const { return query_items * column_items; }
};

// Doc token rows in the accumulation type: the input itself, or (half inputs) a converted copy.
template <typename scalar_t, typename acc_t>
const acc_t* as_acc(const scalar_t* x, int64_t n, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return x;
  } else {
    buffer.resize(n);
    for (int64_t e = 0; e < n; ++e) buffer[e] = static_cast<acc_t>(x[e]);
    return buffer.data();
  }
}

// n zeroed elements of buffer starting on a cache line. The panel kernel loads two vectors of a
// panel per d step; from a vector's 16-byte alignment, 64-byte ones straddle two lines (AVX-512
// fp32 kernel at the reranking shape, docs streamed: 98 GFLOP/s, 106 with the panels aligned).
template <typename T>
T* cache_aligned(std::vector<T>& buffer, int64_t n) {
  constexpr size_t kLine = 64;
  buffer.assign(n + kLine / sizeof(T), T(0));
  void* start = buffer.data();
  size_t space = buffer.size() * sizeof(T);
  return static_cast<T*>(std::align(kLine, n * sizeof(T), start, space));
}

template <typename acc_t>
struct ForwardScratch {
  std::vector<acc_t> panels, tokens, best;
  std::vector<int32_t> arg;
};

// Queries [q0, q1) against columns [k0, k1): writes their raw scores (sums of maxima) and, unless
// argmax is nullptr (with_argmax = false), their argmax. The item's R query token rows are packed
// transposed into panels of the kernel's row count (zero rows pad the last); each doc then goes
// through the panel kernel block by block of its tokens, every panel per block.
template <typename scalar_t, typename acc_t>
void forward_item(const MaxSimView<scalar_t>& v, const MaxSimPanelKernel<acc_t>& kernel,
                  int64_t q0, int64_t q1, int64_t k0, int64_t k1, ForwardScratch<acc_t>& s,
                  acc_t* scores, int32_t* argmax) {
  const MaxSimLayout& l = v.layout;
  const int64_t R = (q1 - q0) * v.Lq, columns = k1 - k0, dim = v.dim, rows = kernel.rows;
  const int64_t panels = (R + rows - 1) / rows;
  s.best.assign(columns * panels * rows, acc_t(0));
  s.arg.assign(columns * panels * rows, -1);
  // Every query of the item reads the same docs (one query when per_query): doc(q0, k).
  const int64_t first_row = l.start(l.doc(q0, k0));
  const int64_t last_doc = l.doc(q0, k1 - 1);
  const int64_t end_row = l.start(last_doc) + l.length(last_doc);
  if (R > 0 && end_row > first_row && dim > 0) {
    acc_t* const packed = cache_aligned(s.panels, panels * dim * rows);
    const scalar_t* Q = v.Q + q0 * v.Lq * dim;
    for (int64_t r = 0; r < R; ++r) {
      acc_t* panel = packed + (r / rows) * dim * rows + r % rows;
      for (int64_t e = 0; e < dim; ++e) panel[e * rows] = static_cast<acc_t>(Q[r * dim + e]);
    }
    const acc_t* tokens = as_acc<scalar_t, acc_t>(v.D + first_row * dim, (end_row - first_row) * dim, s.tokens);
    // Token blocks of a doc stay in L1/L2 while every panel reads them.
    const int64_t block = std::max<int64_t>(1, kBlockElems / dim);
    for (int64_t c = 0; c < columns; ++c) {
      const int64_t start = l.start(l.doc(q0, k0 + c)), length = l.length(l.doc(q0, k0 + c));
      for (int64_t j0 = 0; j0 < length; j0 += block) {
        const int64_t n = std::min(block, length - j0);
        const bool* valid = v.d_mask != nullptr ? v.d_mask + start + j0 : nullptr;
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t out = (c * panels + p) * rows;
          kernel.fn(packed + p * dim * rows, tokens + (start + j0 - first_row) * dim, n,
                    dim, valid, static_cast<int32_t>(j0), s.best.data() + out, s.arg.data() + out,
                    PrefetchRows{nullptr, 0});
        }
      }
    }
  }
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t c = 0; c < columns; ++c) {
      acc_t score = 0;
      for (int64_t i = 0; i < v.Lq; ++i) {
        const int64_t r = c * panels * rows + (q - q0) * v.Lq + i;
        const RunningMax<acc_t> m{s.best[r], v.query_token_valid(q, i) ? s.arg[r] : -1};
        if (argmax != nullptr) argmax[v.argmax_index(q, k0 + c, i)] = m.index;
        score += m.contribution();
      }
      scores[q * l.K + k0 + c] = score;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> maxsim_cpu(const at::Tensor& Q, const at::Tensor& D,
                                              const c10::optional<at::Tensor>& q_mask,
                                              const c10::optional<at::Tensor>& d_mask,
                                              const c10::optional<at::Tensor>& doc_offsets,
                                              bool length_normalize, bool with_argmax) {
  const MaxSimArgs a = maxsim_args(Q, D, q_mask, d_mask, doc_offsets);
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(a.score_type()));
  at::Tensor argmax = empty_argmax(a, with_argmax);
  const WorkPlan plan(a.layout, a.Nq, a.Lq, a.tokens.size(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.Q.scalar_type(), "maxsim_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.view<scalar_t>();
    const MaxSimPanelKernel<acc_t> kernel = maxsim_panel_kernel<acc_t>(cpu_isa());
    acc_t* out = scores.data_ptr<acc_t>();
    int32_t* idx = with_argmax ? argmax.data_ptr<int32_t>() : nullptr;
    at::parallel_for(0, plan.items(), 1, [&](int64_t begin, int64_t end) {
      ForwardScratch<acc_t> scratch;  // one per thread, reused across its items
      for (int64_t item = begin; item < end; ++item) {
        const int64_t qi = item / plan.column_items, ci = item % plan.column_items;
        const int64_t q0 = qi * plan.queries_per_item, k0 = ci * plan.columns_per_item;
        forward_item(v, kernel, q0, std::min(a.Nq, q0 + plan.queries_per_item), k0,
                     std::min(a.layout.K, k0 + plan.columns_per_item), scratch, out, idx);
      }
    });
  });
  if (length_normalize) scores.div_(query_lengths(a));
  return {scores, argmax};
}

// A saved index outside its doc (see argmax_in_doc) is refused, from inside the backward loops.
inline void check_argmax(int32_t j, int64_t length, int64_t q, int64_t k, int64_t i) {
  TORCH_CHECK_INDEX(argmax_in_doc(j, length), "argmax[", q, ", ", k, ", ", i, "] = ", j,
                    " is outside its doc's ", length, " tokens (and is not -1): pass the argmax "
                    "kdops.maxsim returned for these Q, D and masks");
}

// dQ[q, i] = sum_k w[q, k] * D_doc(q,k)[argmax[q, k, i]], summed over k in order.
template <typename scalar_t, typename acc_t>
void query_grad(const MaxSimView<scalar_t>& v, const acc_t* w, const int32_t* argmax,
                scalar_t* dQ) {
  const MaxSimLayout& l = v.layout;
  const int64_t dim = v.dim, n = v.Lq * dim;
  at::parallel_for(0, v.Nq, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(n);
    for (int64_t q = begin; q < end; ++q) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = 0; k < l.K; ++k) {
        const acc_t weight = w[q * l.K + k];
        const scalar_t* doc = v.D + l.start(l.doc(q, k)) * dim;
        const int64_t length = l.length(l.doc(q, k));
        for (int64_t i = 0; i < v.Lq; ++i) {
          const int32_t j = argmax[v.argmax_index(q, k, i)];
          if (j == -1) continue;
          check_argmax(j, length, q, k, i);
          const scalar_t* token = doc + int64_t(j) * dim;
          acc_t* out = acc.data() + i * dim;
          for (int64_t c = 0; c < dim; ++c) out[c] += weight * static_cast<acc_t>(token[c]);
        }
      }
      scalar_t* dst = dQ + q * n;
      for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<scalar_t>(acc[e]);
    }
  });
}

// dD_u[j] = sum over the readers (q, k) of doc u in order, and i with argmax == j, of w * Q[q, i].
// dD is a fresh output as large as D (per-query: every doc read by one query, most of its rows
// by no one), and first touching it is what bounds this loop (benchmarks/profile_maxsim_backward):
// so each row is written once where possible. A row's first contribution is stored as 0 + w * Q
// (the same bits as adding it to a zeroed row, signed zeros included), later ones added, rows no
// one picked zeroed. Full-precision types accumulate in dD itself; half ones in a per-doc buffer.
template <typename scalar_t, typename acc_t>
void doc_grad(const MaxSimView<scalar_t>& v, const acc_t* w, const int32_t* argmax, scalar_t* dD) {
  const MaxSimLayout& l = v.layout;
  const int64_t dim = v.dim;
  at::parallel_for(0, l.num_docs, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer;
    std::vector<char> touched;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t length = l.length(u), n = length * dim;
      scalar_t* dst = dD + l.start(u) * dim;
      acc_t* rows;
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        rows = dst;
      } else {
        buffer.resize(n);
        rows = buffer.data();
      }
      touched.assign(length, 0);
      for (int64_t reader = 0; reader < l.num_readers(u, v.Nq); ++reader) {
        int64_t q, k;
        l.reader(u, reader, q, k);
        const acc_t weight = w[q * l.K + k];
        for (int64_t i = 0; i < v.Lq; ++i) {
          const int32_t j = argmax[v.argmax_index(q, k, i)];
          if (j == -1) continue;
          check_argmax(j, length, q, k, i);
          const scalar_t* token = v.Q + (q * v.Lq + i) * dim;
          acc_t* out = rows + int64_t(j) * dim;
          if (touched[j]) {
            for (int64_t c = 0; c < dim; ++c) out[c] += weight * static_cast<acc_t>(token[c]);
          } else {
            for (int64_t c = 0; c < dim; ++c) out[c] = acc_t(0) + weight * static_cast<acc_t>(token[c]);
            touched[j] = 1;
          }
        }
      }
      for (int64_t j = 0; j < length; ++j)
        if (!touched[j]) std::fill(rows + j * dim, rows + (j + 1) * dim, acc_t(0));
      if constexpr (!std::is_same_v<scalar_t, acc_t>)
        for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<scalar_t>(rows[e]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> maxsim_backward_cpu(
    const at::Tensor& grad, const at::Tensor& argmax, const at::Tensor& Q, const at::Tensor& D,
    const c10::optional<at::Tensor>& q_mask, const c10::optional<at::Tensor>& doc_offsets,
    bool length_normalize, bool grad_Q, bool grad_D) {
  const MaxSimArgs a = maxsim_args(Q, D, q_mask, c10::nullopt, doc_offsets);
  check_maxsim_grad(grad, argmax, a);
  const at::Tensor w = backward_weights(grad, a, length_normalize);
  const at::Tensor idx = argmax.contiguous();
  at::Tensor dQ = grad_Q ? at::empty_like(a.Q) : a.Q.new_empty({0});
  at::Tensor dD = grad_D ? at::empty_like(a.D) : a.D.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.Q.scalar_type(), "maxsim_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto v = a.view<scalar_t>();
    if (grad_Q) query_grad(v, w.data_ptr<acc_t>(), idx.data_ptr<int32_t>(), dQ.data_ptr<scalar_t>());
    if (grad_D) doc_grad(v, w.data_ptr<acc_t>(), idx.data_ptr<int32_t>(), dD.data_ptr<scalar_t>());
  });
  return {dQ, dD};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdops, CPU, m) {
  m.impl("maxsim", &maxsim_cpu);
  m.impl("maxsim_backward", &maxsim_backward_cpu);
}

}  // namespace kdops::cpu
