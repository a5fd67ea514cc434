// Host side of the serving MaxSim ops (maxsim_quantized, maxsim_residual; schemas and formats in
// csrc/kdops.cpp): argument checks and the doc layout, shared by their CPU and CUDA kernels. The layouts are maxsim's padded ones (common/maxsim.h): the
// docs' per-token tensors (D without its last dimension, the scales, codes, mask) are [Nd, Ld]
// (all pairs) or [Nq, K, Ld] (each query against its own K candidates).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>

#include <limits>
#include <string>

#include "common/maxsim_inputs.h"

namespace kdops {

struct ServingArgs {
  at::Tensor Q, q_scale;      // Q contiguous; q_scale float32 [Nq, Lq] or undefined (float Q)
  at::Tensor q_mask, d_mask;  // undefined, or bool contiguous ([Nq, Lq] / the docs' token shape)
  int64_t Nq, Lq, dim;
  MaxSimLayout layout;        // offsets always nullptr: no packed layout here

  // The kernels' view: Q and `docs` as bytes (rows of dim elements in their stored format;
  // nullptr where the docs are not token rows, e.g. residual codes), the masks' data.
  MaxSimView<char> view(const void* docs) const {
    return {static_cast<const char*>(Q.data_ptr()),
            static_cast<const char*>(docs),
            q_mask.defined() ? q_mask.data_ptr<bool>() : nullptr,
            d_mask.defined() ? d_mask.data_ptr<bool>() : nullptr,
            Nq,
            Lq,
            dim,
            layout};
  }
};

inline bool is_quantized_type(at::ScalarType s) { return s == at::kChar || s == at::kFloat8_e4m3fn; }

// Per-token scales: float32 of `shape`, finite and >= 0 (a symmetric scale is max|x| / qmax; a
// negative one would flip which token is the max). Read on the host for host tensors; a
// device-side assert in device memory (assert_on_device, as as_bool_mask).
inline at::Tensor checked_scale(const at::Tensor& scale, at::IntArrayRef shape, const at::Tensor& Q,
                                const char* name, const char* shape_text) {
  TORCH_CHECK_TYPE(scale.scalar_type() == at::kFloat, name, " must be float32, got ", scale.scalar_type());
  TORCH_CHECK_VALUE(scale.sizes() == shape, name, " must be ", shape_text, " = ", shape, ", got ",
                    scale.sizes());
  check_same_device(scale, Q, name, "Q");
  const at::Tensor s = scale.contiguous();
  if (s.numel() == 0) return s;  // (aminmax refuses an empty tensor)
  // One pass: the smallest and largest value (a NaN becomes both), compared with 0 and float's
  // largest. The elementwise form (ge, isfinite, and, all) took 0.9 ms of a 9 ms int8 reranking
  // call on its [1000, 300] doc scales, this 0.04 ms.
  const auto [low, high] = at::aminmax(s);
  const at::Tensor valid = low.ge(0).logical_and_(high.le(std::numeric_limits<float>::max()));
  const std::string message = std::string(name) + " must hold finite values >= 0 (max|x| / qmax per token)";
  if (!assert_on_device(valid, message)) {
    TORCH_CHECK_VALUE(valid.item<bool>(), message, ", got a negative value, a NaN or an infinity");
  }
  return s;
}

// The docs' layout from their per-token shape (`tokens` = D.shape[:-1], or codes.shape).
inline MaxSimLayout serving_layout(at::IntArrayRef tokens, int64_t Nq, const char* name) {
  TORCH_CHECK_VALUE(tokens.size() == 2 || tokens.size() == 3, name, " must be [Nd, Ld, ...] (all "
                    "pairs) or [Nq, K, Ld, ...] (per-query candidates), got per-token shape ", tokens);
  TORCH_CHECK_VALUE(tokens.back() <= std::numeric_limits<int32_t>::max(), name,
                    "'s doc length Ld must be below 2^31, got ", tokens.back());
  if (tokens.size() == 2) {
    return {nullptr, tokens[1], tokens[0], tokens[0], false, tokens[0] * tokens[1]};
  }
  TORCH_CHECK_VALUE(tokens[0] == Nq, name, " must be [Nq, K, Ld, ...] with Nq = ", Nq,
                    " (Q.shape[0]) for per-query candidates, got per-token shape ", tokens);
  return {nullptr, tokens[2], tokens[1], Nq * tokens[1], true, Nq * tokens[1] * tokens[2]};
}

// Q, q_scale, the masks, and the layout of docs whose per-token shape is `tokens`.
inline ServingArgs serving_args(const at::Tensor& Q, const c10::optional<at::Tensor>& q_scale,
                                bool quantized_query_allowed, at::IntArrayRef tokens,
                                const char* docs_name, const c10::optional<at::Tensor>& q_mask,
                                const c10::optional<at::Tensor>& d_mask) {
  check_dim(Q, 3, "Q", "[Nq, Lq, d]");
  const at::ScalarType qt = Q.scalar_type();
  if (quantized_query_allowed) {
    TORCH_CHECK_TYPE(qt == at::kFloat || is_quantized_type(qt),
                     "Q must be float32, or int8 / float8_e4m3fn with q_scale, got ", qt);
  } else {
    TORCH_CHECK_TYPE(qt == at::kFloat, "Q must be float32, got ", qt);
  }
  ServingArgs a;
  a.Nq = Q.size(0);
  a.Lq = Q.size(1);
  a.dim = Q.size(2);
  TORCH_CHECK_VALUE(a.dim >= 1, "Q must have an embedding size d >= 1, got shape ", Q.sizes());
  a.Q = Q.contiguous();
  if (is_quantized_type(qt)) {
    TORCH_CHECK_VALUE(q_scale.has_value(), "q_scale [Nq, Lq] is required with a ", qt, " Q");
    a.q_scale = checked_scale(*q_scale, {a.Nq, a.Lq}, Q, "q_scale", "[Nq, Lq]");
  } else {
    TORCH_CHECK_VALUE(!q_scale.has_value(), "q_scale is only accepted with an int8 or "
                      "float8_e4m3fn Q (a float32 Q is not scaled), got a ", qt, " Q");
  }
  a.layout = serving_layout(tokens, a.Nq, docs_name);
  if (q_mask.has_value()) a.q_mask = checked_mask(*q_mask, {a.Nq, a.Lq}, Q, "q_mask", "[Nq, Lq]");
  if (d_mask.has_value()) a.d_mask = checked_mask(*d_mask, tokens, Q, "d_mask", "the docs' [..., Ld]");
  return a;
}

// maxsim_quantized's inputs, checked, for both backends: the query side and layout, D (int8 or
// float8_e4m3fn, [Nd, Ld, d] or [Nq, K, Ld, d]) contiguous, and its scales.
struct QuantizedArgs {
  ServingArgs a;
  at::Tensor D, d_scale;
  bool int8() const { return a.Q.scalar_type() == at::kChar && D.scalar_type() == at::kChar; }
};

// int32 accumulation of int8 products stays exact up to this embedding size (|sum| <= d * 2^14;
// the CPU kernels' partial sums with the +128 doc offset, up to 255 * 128 per dim past their
// start value, wrap in int32, and the result fits).
constexpr int64_t kInt8MaxDim = 65536;

inline QuantizedArgs quantized_args(const at::Tensor& Q, const c10::optional<at::Tensor>& q_scale,
                                    const at::Tensor& D, const at::Tensor& d_scale,
                                    const c10::optional<at::Tensor>& q_mask,
                                    const c10::optional<at::Tensor>& d_mask) {
  TORCH_CHECK_TYPE(is_quantized_type(D.scalar_type()), "D must be int8 or float8_e4m3fn (float "
                   "docs: kdops.maxsim), got ", D.scalar_type());
  check_same_device(D, Q, "D", "Q");
  TORCH_CHECK_VALUE(D.dim() == 3 || D.dim() == 4, "D must be [Nd, Ld, d] (all pairs) or "
                    "[Nq, K, Ld, d] (per-query candidates), got shape ", D.sizes());
  const at::IntArrayRef tokens = D.sizes().slice(0, D.dim() - 1);
  QuantizedArgs q{serving_args(Q, q_scale, true, tokens, "D", q_mask, d_mask), D.contiguous(), {}};
  TORCH_CHECK_VALUE(D.size(-1) == q.a.dim, "D must have the embedding size d = ", q.a.dim,
                    " of Q in its last dimension, got shape ", D.sizes());
  q.d_scale = checked_scale(d_scale, tokens, Q, "d_scale", "D.shape[:-1]");
  TORCH_CHECK_VALUE(!q.int8() || q.a.dim <= kInt8MaxDim, "int8 Q and D need an embedding size d <= ",
                    kInt8MaxDim, " (exact int32 accumulation), got ", q.a.dim);
  return q;
}

// maxsim_residual's inputs, checked, for both backends: the query side and layout, and the docs:
// codes as int32 centroid ids, residuals, centroids and bucket weights contiguous, nbits.
struct ResidualArgs {
  ServingArgs a;
  at::Tensor codes, residuals, centroids, weights;
  int nbits;
};

inline ResidualArgs residual_args(const at::Tensor& Q, const at::Tensor& codes, const at::Tensor& residuals,
                                  const at::Tensor& centroids, const at::Tensor& bucket_weights,
                                  const c10::optional<at::Tensor>& q_mask, const c10::optional<at::Tensor>& d_mask) {
  TORCH_CHECK_TYPE(codes.scalar_type() == at::kInt || codes.scalar_type() == at::kLong,
                   "codes must be int32 or int64 (centroid ids), got ", codes.scalar_type());
  TORCH_CHECK_TYPE(residuals.scalar_type() == at::kByte, "residuals must be uint8 (packed bits), got ",
                   residuals.scalar_type());
  TORCH_CHECK_TYPE(centroids.scalar_type() == at::kFloat, "centroids must be float32, got ", centroids.scalar_type());
  TORCH_CHECK_TYPE(bucket_weights.scalar_type() == at::kFloat, "bucket_weights must be float32, got ",
                   bucket_weights.scalar_type());
  check_same_device(codes, Q, "codes", "Q");
  check_same_device(residuals, Q, "residuals", "Q");
  check_same_device(centroids, Q, "centroids", "Q");
  check_same_device(bucket_weights, Q, "bucket_weights", "Q");
  ResidualArgs r;
  r.a = serving_args(Q, c10::nullopt, false, codes.sizes(), "codes", q_mask, d_mask);
  const int64_t dim = r.a.dim;
  check_dim(centroids, 2, "centroids", "[C, d]");
  TORCH_CHECK_VALUE(centroids.size(1) == dim && centroids.size(0) >= 1, "centroids must be [C, d] with C >= 1 "
                    "and the embedding size d = ", dim, " of Q, got shape ", centroids.sizes());
  TORCH_CHECK_VALUE(residuals.dim() == codes.dim() + 1 && residuals.sizes().slice(0, codes.dim()) == codes.sizes(),
                    "residuals must be codes.shape + [d * nbits / 8] = ", codes.sizes(), " + [...], got ",
                    residuals.sizes());
  const int64_t bytes = residuals.size(-1);
  const int64_t nbits = bytes * 8 % dim == 0 ? bytes * 8 / dim : 0;
  TORCH_CHECK_VALUE(nbits == 1 || nbits == 2 || nbits == 4, "residuals' last dimension must be d * nbits / 8 "
                    "with nbits 1, 2 or 4 (d = ", dim, ": ", dim / 8, ", ", dim / 4, " or ", dim / 2,
                    " bytes), got ", bytes);
  TORCH_CHECK_VALUE(bucket_weights.dim() == 1 && bucket_weights.size(0) == (int64_t(1) << nbits),
                    "bucket_weights must be [2^nbits] = [", int64_t(1) << nbits, "] for ", nbits,
                    "-bit residuals, got shape ", bucket_weights.sizes());
  r.codes = codes.to(at::kInt).contiguous();
  if (r.codes.numel() > 0) {
    // Read on the host for host tensors (naming the values found); a device-side assert in
    // device memory (assert_on_device, as the scales).
    const at::Tensor valid = r.codes.ge(0).logical_and_(r.codes.lt(centroids.size(0))).all();
    const std::string range = "codes must be centroid ids in [0, " + std::to_string(centroids.size(0)) + ")";
    if (!assert_on_device(valid, range)) {
      const int64_t low = r.codes.min().item<int32_t>(), high = r.codes.max().item<int32_t>();
      TORCH_CHECK_INDEX(low >= 0 && high < centroids.size(0), range, ", got values in [", low, ", ", high, "]");
    }
  }
  r.residuals = residuals.contiguous();
  r.centroids = centroids.contiguous();
  r.weights = bucket_weights.contiguous();
  r.nbits = static_cast<int>(nbits);
  return r;
}

// The empty-or-[Nq, K, Lq] argmax and the [Nq, K] float32 scores of a serving op.
inline at::Tensor serving_argmax(const ServingArgs& a, bool with_argmax) {
  const auto opts = a.Q.options().dtype(at::kInt);
  return with_argmax ? at::empty({a.Nq, a.layout.K, a.Lq}, opts) : at::empty({0}, opts);
}

// Valid query tokens per query (>= 1) as [Nq, 1] float32: length_normalize's divisor.
inline at::Tensor serving_query_lengths(const ServingArgs& a) {
  const auto opts = a.Q.options().dtype(at::kFloat);
  if (!a.q_mask.defined()) return at::full({a.Nq, 1}, std::max<int64_t>(a.Lq, 1), opts);
  return a.q_mask.sum(1, /*keepdim=*/true).clamp_min(1).to(at::kFloat);
}

}  // namespace kdops
