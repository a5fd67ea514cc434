// Host side of the Plackett-Luce family: argument checks (each naming the argument) and the
// raw-pointer views the CPU and CUDA kernels read.
//
// Value checks on index tensors (lengths in [0, n], target in [0, C)) read host tensors on the
// host. In device memory (the CUDA ops, kernels_check_indices) the kernels that read them check
// them: each flags its rows and the op asserts the flags on the device (no sync, one reduction
// instead of a range check's four ops); the kernels clamp the values they read, so they stay
// memory-safe before the assert fires. Whether a user's ranking is a permutation is checked
// inside the forward kernel of plackett_luce_loss in the same way.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <limits>
#include <string>

#include "common/checks.h"
#include "common/plackett_luce.h"

namespace kdops {

struct PLRowsArgs {
  at::Tensor scores;   // [B, n] contiguous
  at::Tensor lengths;  // int64 [B] contiguous, or undefined (every row holds n items)
  int64_t B, n, top_k;

  template <typename scalar_t>
  PLRowsView<scalar_t> view() const {
    return {scores.data_ptr<scalar_t>(), lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr,
            B, n, top_k};
  }
};

inline std::string index_range_message(const char* name, const char* what, int64_t lo, int64_t hi) {
  return std::string(name) + " must hold " + what + " in [" + std::to_string(lo) + ", " +
         std::to_string(hi) + "]";
}

// The messages of the index checks a CUDA kernel makes (see the header comment).
inline std::string lengths_message(int64_t n) { return index_range_message("lengths", "row lengths", 0, n); }
inline std::string target_message(int64_t n) { return index_range_message("target", "class indices", 0, n - 1); }

// Integer values of t (any shape) lie in [lo, hi]: read on the host for host tensors, a
// device-side assert (assert_on_device) for device memory, or nothing there where
// `kernels_check` (the kernels that read t check it; see the header comment).
inline void check_index_range(const at::Tensor& t, int64_t lo, int64_t hi, const char* name,
                              const char* what, bool kernels_check) {
  if (t.numel() == 0) return;
  if (is_device_memory(t)) {
    if (!kernels_check) {
      assert_on_device(t.ge(lo).logical_and_(t.le(hi)).all(), index_range_message(name, what, lo, hi));
    }
    return;
  }
  const auto [min, max] = at::aminmax(t);
  const int64_t mn = min.item<int64_t>(), mx = max.item<int64_t>();
  TORCH_CHECK_INDEX(mn >= lo && mx <= hi, name, " must hold ", what, " in [", lo, ", ", hi,
                    "], got values in [", mn, ", ", mx, "]");
}

inline void check_integer(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), name,
                   " must be an integer tensor, got ", t.scalar_type());
}

// scores [B, n] with optional lengths [B] (integers in [0, n]) and top_k >= 1.
inline PLRowsArgs pl_rows_args(const at::Tensor& scores, const c10::optional<at::Tensor>& lengths,
                               c10::optional<int64_t> top_k, const char* name,
                               bool kernels_check_indices = false) {
  check_floating(scores, name);
  check_dim(scores, 2, name, "[B, n]");
  const int64_t B = scores.size(0), n = scores.size(1);
  // Rank keys pack an item's index in 32 bits (the CPU sort; the CUDA kernels' int32 offsets).
  TORCH_CHECK_VALUE(n <= std::numeric_limits<int32_t>::max(), name,
                    " rows must hold fewer than 2^31 items, got ", n);
  TORCH_CHECK_VALUE(!top_k.has_value() || *top_k >= 1, "top_k must be at least 1, got ",
                    top_k.value_or(0));
  at::Tensor len;
  if (lengths.has_value()) {
    check_integer(*lengths, "lengths");
    check_same_device(*lengths, scores, "lengths", name);
    TORCH_CHECK_VALUE(lengths->dim() == 1 && lengths->size(0) == B, "lengths must be [B] = [", B,
                      "], got shape ", lengths->sizes());
    // Converted before the range check: any integer dtype is taken alike on every backend (the
    // host check's aminmax has no kernel for uint16/32/64), and a uint64 past 2^63 becomes
    // negative, out of range.
    len = lengths->to(at::kLong).contiguous();
    check_index_range(len, 0, n, "lengths", "row lengths", kernels_check_indices);
  }
  return {scores.contiguous(), len, B, n, top_k.has_value() ? std::min(*top_k, n) : n};
}

// An int64 [B, n] tensor laid out like the scores (a ranking).
inline at::Tensor ranking_arg(const at::Tensor& ranking, const at::Tensor& scores,
                              const char* name) {
  TORCH_CHECK_TYPE(ranking.scalar_type() == at::kLong, name, " must be int64, got ",
                   ranking.scalar_type());
  check_same_shape(ranking, scores, name, "scores");
  check_same_device(ranking, scores, name, "scores");
  return ranking.contiguous();
}

// A floating tensor shaped, typed and placed like `ref`.
inline at::Tensor like_arg(const at::Tensor& t, const at::Tensor& ref, const char* name,
                           const char* ref_name) {
  check_same_shape(t, ref, name, ref_name);
  check_same_dtype(t, ref, name, ref_name);
  check_same_device(t, ref, name, ref_name);
  return t.contiguous();
}

// ListMLE relevance: any real dtype, ranked in the scores' dtype.
inline at::Tensor relevance_arg(const at::Tensor& relevance, const at::Tensor& scores) {
  TORCH_CHECK_TYPE(!at::isComplexType(relevance.scalar_type()) &&
                       relevance.scalar_type() != at::kBool,
                   "relevance must be a real tensor, got ", relevance.scalar_type());
  check_same_shape(relevance, scores, "relevance", "scores");
  check_same_device(relevance, scores, "relevance", "scores");
  return relevance.to(scores.scalar_type()).contiguous();
}

inline double temperature_arg(double t, const char* name) {
  TORCH_CHECK_VALUE(t > 0 && std::isfinite(t), name, " must be a positive finite number, got ", t);
  return t;
}

// A temperature given as a tensor (the tensor_temperature overloads): one for every row, a 0-dim
// floating tensor on the CPU or on the scores' device (per-row temperatures would need the kernels
// to take them; they do not). Its value is checked where it is read (temperature_arg).
inline void check_temperature_tensor(const at::Tensor& t, const at::Tensor& scores, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 0, name, " must be a float or a 0-dim tensor (one temperature for every row), got shape ",
                    t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.is_cpu() || t.device() == scores.device(), name,
                    " must be on the CPU or on the device of the scores (", scores.device(), "), got ", t.device());
}

// PLD: student_logits and teacher_logits [B, C], target [B] with classes in [0, C).
struct PLDArgs {
  PLRowsArgs rows;  // the student's logits
  at::Tensor teacher;
  at::Tensor target;  // int64 [B]
  double temperature;
};

inline PLDArgs pld_args(const at::Tensor& student, const at::Tensor& teacher,
                        const at::Tensor& target, double temperature, bool kernels_check_indices = false) {
  auto rows = pl_rows_args(student, c10::nullopt, c10::nullopt, "student_logits");
  TORCH_CHECK_VALUE(rows.n >= 1, "student_logits must hold at least one class, got shape ",
                    student.sizes());
  at::Tensor t = like_arg(teacher, student, "teacher_logits", "student_logits");
  check_integer(target, "target");
  check_same_device(target, student, "target", "student_logits");
  TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == rows.B, "target must be [B] = [",
                    rows.B, "], got shape ", target.sizes());
  const at::Tensor classes = target.to(at::kLong).contiguous();  // as lengths in pl_rows_args
  check_index_range(classes, 0, rows.n - 1, "target", "class indices", kernels_check_indices);
  return {rows, t, classes, temperature_arg(temperature, "temperature")};
}

// Listwise KD: student and teacher [B, n] with optional lengths, and the two temperatures.
struct KDArgs {
  PLRowsArgs rows;  // the student's scores
  at::Tensor teacher;
  double ts, tt;
};

inline KDArgs kd_args(const at::Tensor& student, const at::Tensor& teacher,
               const c10::optional<at::Tensor>& lengths, double ts, double tt,
               bool kernels_check_indices = false) {
  auto rows = pl_rows_args(student, lengths, c10::nullopt, "student", kernels_check_indices);
  return {rows, like_arg(teacher, rows.scores, "teacher", "student"),
          temperature_arg(ts, "student_temperature"), temperature_arg(tt, "teacher_temperature")};
}

// The upstream gradient of a PL-family loss: a scalar for 'mean'/'sum', else [B].
inline void check_row_loss_grad(const at::Tensor& grad, const at::Tensor& scores, int64_t B,
                                bool reduced) {
  check_same_dtype(grad, scores, "grad", "the scores");
  check_same_device(grad, scores, "grad", "the scores");
  // The shape, not only the number of elements (a [1] grad of a scalar loss, a [B, 1] of a [B]).
  TORCH_CHECK_VALUE(reduced ? grad.dim() == 0 : (grad.dim() == 1 && grad.size(0) == B), "grad must be ",
                    reduced ? "a scalar (shape [])" : "[B] = [" + std::to_string(B) + "]", ", got shape ",
                    grad.sizes());
}

}  // namespace kdops
