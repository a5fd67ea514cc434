// Host side of Margin-MSE: argument checks and the raw-pointer view the kernels read.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "common/checks.h"
#include "common/margin_mse.h"

namespace kdops {

// Both public forms in one shape. Pairwise: the four [B] tensors, N = 1. Multi-negative:
// student_pos = student_neg = student [B, 1+N] (the view offsets the negatives by one column).
struct MarginMSEArgs {
  bool pairwise;
  at::Tensor student_pos, student_neg, teacher_pos, teacher_neg;
  at::Tensor mask;  // undefined, or bool [B, 1+N] contiguous
  int64_t B, N;

  int64_t neg_offset() const { return pairwise ? 0 : 1; }
  int64_t row_stride() const { return pairwise ? 1 : N + 1; }

  template <typename scalar_t>
  MarginMSEView<scalar_t> view() const {
    return {student_pos.data_ptr<scalar_t>(),
            student_neg.data_ptr<scalar_t>() + neg_offset(),
            teacher_pos.data_ptr<scalar_t>(),
            teacher_neg.data_ptr<scalar_t>() + neg_offset(),
            mask.defined() ? mask.data_ptr<bool>() : nullptr,
            B,
            N,
            row_stride(),
            row_stride()};
  }
};

inline MarginMSEArgs margin_mse_multi_args(const at::Tensor& student, const at::Tensor& teacher,
                                           const c10::optional<at::Tensor>& mask) {
  check_floating(student, "student");
  check_dim(student, 2, "student", "[B, 1+N] (column 0 the positive)");
  TORCH_CHECK_VALUE(student.size(0) > 0, "student must hold at least one row, got shape ",
                    student.sizes());
  TORCH_CHECK_VALUE(student.size(1) >= 2,
                    "student must be [B, 1+N] with at least one negative column, got shape ",
                    student.sizes());
  check_same_shape(teacher, student, "teacher", "student");
  check_same_dtype(teacher, student, "teacher", "student");
  check_same_device(teacher, student, "teacher", "student");
  at::Tensor s = student.contiguous(), t = teacher.contiguous(), m;
  if (mask.has_value()) {
    check_same_shape(*mask, student, "mask", "student");
    check_same_device(*mask, student, "mask", "student");
    m = as_bool_mask(*mask, "mask");
  }
  return {false, s, s, t, t, m, student.size(0), student.size(1) - 1};
}

inline MarginMSEArgs margin_mse_pairwise_args(const at::Tensor& student_pos,
                                              const at::Tensor& student_neg,
                                              const at::Tensor& teacher_pos,
                                              const at::Tensor& teacher_neg) {
  check_floating(student_pos, "student_pos");
  check_dim(student_pos, 1, "student_pos", "[B]");
  TORCH_CHECK_VALUE(student_pos.size(0) > 0, "student_pos must hold at least one score (empty batch)");
  const std::pair<const at::Tensor*, const char*> others[] = {
      {&student_neg, "student_neg"}, {&teacher_pos, "teacher_pos"}, {&teacher_neg, "teacher_neg"}};
  for (const auto& [t, name] : others) {
    check_same_shape(*t, student_pos, name, "student_pos");
    check_same_dtype(*t, student_pos, name, "student_pos");
    check_same_device(*t, student_pos, name, "student_pos");
  }
  return {true,
          student_pos.contiguous(),
          student_neg.contiguous(),
          teacher_pos.contiguous(),
          teacher_neg.contiguous(),
          at::Tensor(),
          student_pos.size(0),
          1};
}

// The upstream gradient must match the forward's output: a scalar for 'mean'/'sum', else the
// per-term shape.
inline void check_margin_mse_grad(const at::Tensor& grad, const MarginMSEArgs& a, bool reduced) {
  check_same_dtype(grad, a.student_pos, "grad", "the scores");
  check_same_device(grad, a.student_pos, "grad", "the scores");
  // The shape, not only the number of elements: a [B*N] gradient for a [B, N] loss is a caller's
  // mix-up, not a layout to guess.
  const std::vector<int64_t> loss_shape =
      reduced ? std::vector<int64_t>{} : (a.pairwise ? std::vector<int64_t>{a.B} : std::vector<int64_t>{a.B, a.N});
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(loss_shape), "grad must be the shape of the loss ",
                    reduced ? "(a scalar) " : "", at::IntArrayRef(loss_shape), ", got ", grad.sizes());
}

// The valid-term count margin_mse returned with the loss ('mean' divides backward by it): an
// int64 scalar on the scores' device, in [0, B*N]. The value is checked where it can be read
// without a device sync (host tensors: the CPU kernels read it anyway); in device memory it is
// not read on the host: the CUDA kernel reads it on the device, where a wrong value can only
// scale the gradient (it indexes nothing).
inline void check_count(const at::Tensor& count, const MarginMSEArgs& a) {
  TORCH_CHECK_TYPE(count.scalar_type() == at::kLong,
                   "count must be the int64 scalar margin_mse returned, got ", count.scalar_type());
  TORCH_CHECK_VALUE(count.dim() == 0, "count must be the scalar margin_mse returned, got shape ",
                    count.sizes());
  check_same_device(count, a.student_pos, "count", "student");
  if (!is_device_memory(count)) {
    const int64_t c = count.item<int64_t>();
    TORCH_CHECK_VALUE(c >= 0 && c <= a.B * a.N, "count must be the number of valid terms, in [0, ",
                      a.B * a.N, "] (B*N), got ", c);
  }
}

}  // namespace kdops
