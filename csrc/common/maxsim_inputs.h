// Host side of MaxSim: argument checks, the layout of the doc tokens, and the raw-pointer view
// the kernels read. Shared by the CPU and CUDA entry points.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/util/Optional.h>

#include <limits>
#include <string>

#include "common/checks.h"
#include "common/maxsim.h"

namespace kdops {

// Inputs checked and made contiguous. D is kept in its public shape (dD comes back in it);
// `tokens` is the same memory as [T, d] token rows.
struct MaxSimArgs {
  at::Tensor Q, D, tokens;
  at::Tensor q_mask, d_mask;  // undefined, or bool contiguous ([Nq, Lq] / D.shape[:-1])
  at::Tensor offsets;         // packed only: int64 [Nd + 1] contiguous, on Q's device
  int64_t Nq, Lq, dim;
  MaxSimLayout layout;        // layout.offsets is set by view() (device pointer on CUDA)

  at::ScalarType score_type() const { return at::toOpMathType(Q.scalar_type()); }

  template <typename scalar_t>
  MaxSimView<scalar_t> view() const {
    MaxSimLayout l = layout;
    l.offsets = offsets.defined() ? offsets.data_ptr<int64_t>() : nullptr;
    return {Q.data_ptr<scalar_t>(),
            tokens.data_ptr<scalar_t>(),
            q_mask.defined() ? q_mask.data_ptr<bool>() : nullptr,
            d_mask.defined() ? d_mask.data_ptr<bool>() : nullptr,
            Nq,
            Lq,
            dim,
            l};
  }
};

// doc_offsets: int64 [Nd + 1], 0 first, T last, non-decreasing, each doc below 2^31 tokens
// (argmax indices are int32). On the host the values are read and each condition raises its own
// message; in device memory that read would be a sync, so there one validity flag computed on
// the device is asserted (assert_on_device) and the kernels clamp the offsets (MaxSimLayout).
inline void check_doc_offsets(const at::Tensor& offsets, int64_t T) {
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, "doc_offsets must be int64, got ",
                   offsets.scalar_type());
  check_dim(offsets, 1, "doc_offsets", "[Nd + 1] (doc k holds tokens offsets[k]..offsets[k+1])");
  TORCH_CHECK_VALUE(offsets.size(0) >= 1, "doc_offsets must hold at least one entry (0), got none");
  const int64_t n = offsets.size(0), longest = std::numeric_limits<int32_t>::max();
  if (is_device_memory(offsets)) {
    const at::Tensor lengths = offsets.diff();  // in [0, 2^31 - 1]: non-decreasing, int32 argmax
    const at::Tensor valid = lengths.clamp(0, longest).eq(lengths).all()
                                 .logical_and_(offsets.select(0, 0).eq(0))
                                 .logical_and_(offsets.select(0, n - 1).eq(T));
    assert_on_device(valid, "doc_offsets must start at 0, end at the number of tokens T = " +
                                std::to_string(T) + " (D_tokens.shape[0]), be non-decreasing and "
                                "hold no doc of 2^31 tokens or more");
    return;
  }
  const at::Tensor host = offsets.contiguous();
  const int64_t* o = host.data_ptr<int64_t>();
  TORCH_CHECK_VALUE(o[0] == 0, "doc_offsets must start at 0, got ", o[0]);
  TORCH_CHECK_VALUE(o[n - 1] == T, "doc_offsets must end at the number of tokens T = ", T,
                    " (D_tokens.shape[0]), got ", o[n - 1]);
  for (int64_t k = 0; k + 1 < n; ++k) {
    TORCH_CHECK_VALUE(o[k] <= o[k + 1], "doc_offsets must be non-decreasing, got offsets[", k,
                      "] = ", o[k], " > offsets[", k + 1, "] = ", o[k + 1]);
    TORCH_CHECK_VALUE(o[k + 1] - o[k] <= longest, "doc ", k,
                      " of doc_offsets is longer than 2^31 - 1 tokens");
  }
}

inline at::Tensor checked_mask(const at::Tensor& mask, at::IntArrayRef shape, const at::Tensor& ref,
                               const char* name, const char* shape_text) {
  TORCH_CHECK_VALUE(mask.sizes() == shape, name, " must be ", shape_text, " = ", shape, ", got ",
                    mask.sizes());
  check_same_device(mask, ref, name, "Q");
  return as_bool_mask(mask, name);
}

// Q [Nq, Lq, d]; D [Nd, Ld, d] (all pairs), [Nq, K, Ld, d] (per query), or [T, d] with
// doc_offsets (packed).
inline MaxSimArgs maxsim_args(const at::Tensor& Q, const at::Tensor& D,
                              const c10::optional<at::Tensor>& q_mask,
                              const c10::optional<at::Tensor>& d_mask,
                              const c10::optional<at::Tensor>& doc_offsets) {
  check_floating(Q, "Q");
  check_dim(Q, 3, "Q", "[Nq, Lq, d]");
  check_same_dtype(D, Q, "D", "Q");
  check_same_device(D, Q, "D", "Q");
  const int64_t Nq = Q.size(0), Lq = Q.size(1), dim = Q.size(2);
  TORCH_CHECK_VALUE(dim >= 1, "Q must have an embedding size d >= 1, got shape ", Q.sizes());
  MaxSimArgs a;
  a.Nq = Nq;
  a.Lq = Lq;
  a.dim = dim;
  a.Q = Q.contiguous();
  a.D = D.contiguous();
  if (doc_offsets.has_value()) {
    TORCH_CHECK_VALUE(D.dim() == 2, "D_tokens must be [T, d] when doc_offsets is given, got shape ",
                      D.sizes());
    TORCH_CHECK_VALUE(!d_mask.has_value(),
                      "d_mask is not accepted with doc_offsets: packed docs hold only real tokens");
    check_same_device(*doc_offsets, Q, "doc_offsets", "Q");
    check_doc_offsets(*doc_offsets, D.size(0));
    a.offsets = doc_offsets->contiguous();
    const int64_t Nd = doc_offsets->size(0) - 1;
    a.layout = {nullptr, 0, Nd, Nd, false, D.size(0)};
  } else if (D.dim() == 3) {
    a.layout = {nullptr, D.size(1), D.size(0), D.size(0), false, D.size(0) * D.size(1)};
  } else if (D.dim() == 4) {
    TORCH_CHECK_VALUE(D.size(0) == Nq, "D must be [Nq, K, Ld, d] with Nq = ", Nq,
                      " (Q.shape[0]) for per-query candidates, got shape ", D.sizes());
    a.layout = {nullptr, D.size(2), D.size(1), Nq * D.size(1), true, Nq * D.size(1) * D.size(2)};
  } else {
    TORCH_CHECK_VALUE(false, "D must be [Nd, Ld, d] (all pairs) or [Nq, K, Ld, d] (per-query "
                             "candidates), or [T, d] with doc_offsets; got shape ", D.sizes());
  }
  TORCH_CHECK_VALUE(D.size(-1) == dim, "D must have the embedding size d = ", dim,
                    " of Q in its last dimension, got shape ", D.sizes());
  TORCH_CHECK_VALUE(a.offsets.defined() || a.layout.Ld <= std::numeric_limits<int32_t>::max(),
                    "D's doc length Ld must be below 2^31, got ", a.layout.Ld);
  a.tokens = a.D.view({-1, dim});
  if (q_mask.has_value()) {
    a.q_mask = checked_mask(*q_mask, {Nq, Lq}, Q, "q_mask", "[Nq, Lq]");
  }
  if (d_mask.has_value()) {
    a.d_mask = checked_mask(*d_mask, D.sizes().slice(0, D.dim() - 1), Q, "d_mask", "D.shape[:-1]");
  }
  return a;
}

// The argmax output, uninitialised: [Nq, K, Lq] int32, or [0] when the caller wants none
// (with_argmax = false; the kernels then write no index).
inline at::Tensor empty_argmax(const MaxSimArgs& a, bool with_argmax) {
  const auto opts = a.Q.options().dtype(at::kInt);
  return with_argmax ? at::empty({a.Nq, a.layout.K, a.Lq}, opts) : at::empty({0}, opts);
}

// Valid query tokens per query, >= 1, as [Nq, 1] in the score dtype: the divisor of
// length_normalize (a query with no valid token scores 0 either way).
inline at::Tensor query_lengths(const MaxSimArgs& a) {
  const auto opts = a.Q.options().dtype(a.score_type());
  if (!a.q_mask.defined()) return at::full({a.Nq, 1}, std::max<int64_t>(a.Lq, 1), opts);
  return a.q_mask.sum(1, /*keepdim=*/true).clamp_min(1).to(a.score_type());
}

// The saved indices and upstream gradient must match the forward's outputs.
inline void check_maxsim_grad(const at::Tensor& grad, const at::Tensor& argmax, const MaxSimArgs& a) {
  const int64_t K = a.layout.K;
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == a.Nq && grad.size(1) == K,
                    "grad must be the scores' shape [", a.Nq, ", ", K, "], got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == a.score_type(), "grad must have the scores' dtype ",
                   a.score_type(), ", got ", grad.scalar_type());
  check_same_device(grad, a.Q, "grad", "Q");
  TORCH_CHECK_VALUE(argmax.dim() == 3 && argmax.size(0) == a.Nq && argmax.size(1) == K &&
                        argmax.size(2) == a.Lq,
                    "argmax must be [Nq, K, Lq] = [", a.Nq, ", ", K, ", ", a.Lq, "], got ",
                    argmax.sizes());
  TORCH_CHECK_TYPE(argmax.scalar_type() == at::kInt, "argmax must be int32, got ",
                   argmax.scalar_type());
  check_same_device(argmax, a.Q, "argmax", "Q");
}

// Per-(query, column) weight of backward: g[q, k], divided by the query's length when
// normalised, in the accumulation type (float32 for half inputs).
inline at::Tensor backward_weights(const at::Tensor& grad, const MaxSimArgs& a,
                                   bool length_normalize) {
  at::Tensor w = grad.to(a.score_type());
  if (length_normalize) w = at::div(w, query_lengths(a));
  return w.contiguous();
}

}  // namespace kdops
