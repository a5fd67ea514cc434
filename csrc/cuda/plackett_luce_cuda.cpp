// The Plackett-Luce family on CUDA: the ops (argument checks, outputs, the permutation check's
// scratch and assert, long rows' ranking by at::sort, the per-row losses' reduction) around the
// kernels of plackett_luce_kernels.cu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/lt.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <optional>

#include "common/plackett_luce_inputs.h"
#include "common/reduction.h"
#include "cuda/device.h"
#include "cuda/plackett_luce_kernels.h"

namespace kdops::cuda {
namespace {

using plackett_luce::WeightMode;

// The ranking of each row of `keys` [B, n] (see plackett_luce::rank_rows); `first`: PLD's target or
// undefined; lengths: undefined or int64 [B].
at::Tensor rank_rows(const at::Tensor& keys, const at::Tensor& lengths, const at::Tensor& first) {
  const int64_t B = keys.size(0), n = keys.size(1);
  at::Tensor ranking = at::empty({B, n}, keys.options().dtype(at::kLong));
  if (B == 0 || n == 0) return ranking;
  const LaunchTarget on = launch_target();
  const int64_t* lengths_ptr = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
  const int64_t* first_ptr = first.defined() ? first.data_ptr<int64_t>() : nullptr;
  bool ranked = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keys.scalar_type(), "rank_rows", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    ranked = plackett_luce::rank_rows<scalar_t, acc_t>(keys.data_ptr<scalar_t>(), lengths_ptr, first_ptr, B, n,
                                                       ranking.data_ptr<int64_t>(), on);
  });
  if (ranked) return ranking;
  // Long rows: torch's stable sort has the same order (NaN first, -0 ties +0, ties by index);
  // padding keyed -inf stays after the valid items, which all have lower indices.
  at::Tensor k = keys;
  if (lengths.defined()) {
    const at::Tensor columns = at::arange(n, lengths.options()).unsqueeze(0);
    k = at::where(at::lt(columns, lengths.unsqueeze(1)), keys,
                  at::full({}, -std::numeric_limits<double>::infinity(), keys.options()));
  }
  at::Tensor order = std::get<1>(at::sort(k, /*stable=*/true, /*dim=*/1, /*descending=*/true));
  if (!first.defined()) return order;
  plackett_luce::move_to_front(order.data_ptr<int64_t>(), first_ptr, B, n, ranking.data_ptr<int64_t>(), on);
  return ranking;
}

// Reduces per-row losses (acc dtype) to the op's output in `dtype`: one reduction launch ('mean'
// of no rows is 0, their sum), and a cast for half outputs.
at::Tensor reduce_rows(const at::Tensor& row_loss, Reduction reduction, at::ScalarType dtype) {
  if (reduction == Reduction::None) return row_loss.to(dtype);
  const bool mean = reduction == Reduction::Mean && row_loss.numel() > 0;
  return (mean ? row_loss.mean() : row_loss.sum()).to(dtype);
}

// The permutation check's scratch: a zeroed bitmap and a flag per row (written by the kernel).
struct PermutationCheck {
  at::Tensor bitmap, row_ok;
  PermutationCheck(int64_t B, int64_t n, const at::TensorOptions& opts)
      : bitmap(at::zeros({B, (n + 31) / 32}, opts.dtype(at::kInt))),
        row_ok(at::empty({B}, opts.dtype(at::kBool))) {}
  unsigned int* bits() { return reinterpret_cast<unsigned int*>(bitmap.data_ptr<int>()); }
  bool* ok() { return row_ok.data_ptr<bool>(); }
  // A device-side assert: no host read (the op fails at the next sync; the simulator at once).
  void assert_all_rows_ok() const {
    at::_assert_async(row_ok.all(),
                      "ranking is not a permutation of 0..len-1 in some row (len = lengths[b], or "
                      "n): its first len entries must hold each of the row's valid items exactly once");
  }
};

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The forward of every PL op: per-row losses of `ranking` (checked when `check`: a user's ranking), reduced.
at::Tensor pl_forward(const PLRowsArgs& rows, const at::Tensor& ranking, WeightMode mode,
                      const at::Tensor& values, double temperature, bool check, Reduction reduction) {
  const auto opts = rows.scores.options();
  at::Tensor row_loss = at::empty({rows.B}, opts.dtype(acc_type(opts.dtype().toScalarType())));
  if (rows.B == 0) return reduce_rows(row_loss, reduction, opts.dtype().toScalarType());
  std::optional<PermutationCheck> perm;  // a user's ranking only: the zeroed bitmap is a launch
  if (check) perm.emplace(rows.B, rows.n, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(), "pl_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    plackett_luce::forward<scalar_t, acc_t>(rows.view<scalar_t>(), ranking.data_ptr<int64_t>(), mode,
                                            values.defined() ? values.data_ptr<scalar_t>() : nullptr, temperature,
                                            perm ? perm->bits() : nullptr, perm ? perm->ok() : nullptr,
                                            row_loss.data_ptr<acc_t>(), launch_target());
  });
  if (perm) perm->assert_all_rows_ok();
  return reduce_rows(row_loss, reduction, opts.dtype().toScalarType());
}

// The backward of every PL op: (grad_scores, grad_values) with grad_values [B, n] when
// values_grad (weights' or teacher's gradient), else empty [0, n].
std::tuple<at::Tensor, at::Tensor> pl_backward(const PLRowsArgs& rows, const at::Tensor& ranking,
                                               WeightMode mode, const at::Tensor& values,
                                               double temperature, const at::Tensor& grad,
                                               Reduction reduction, bool values_grad) {
  check_row_loss_grad(grad, rows.scores, rows.B, reduction != Reduction::None);
  const auto opts = rows.scores.options();
  at::Tensor grad_scores = at::empty({rows.B, rows.n}, opts);
  at::Tensor grad_values = at::empty({values_grad ? rows.B : 0, rows.n}, opts);
  if (rows.B == 0 || rows.n == 0) return {grad_scores, grad_values};
  at::Tensor lse = at::empty({rows.B, rows.n}, opts.dtype(acc_type(opts.dtype().toScalarType())));
  const at::Tensor g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(), "pl_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* gv = values_grad ? grad_values.data_ptr<scalar_t>() : nullptr;
    plackett_luce::backward<scalar_t, acc_t>(
        rows.view<scalar_t>(), ranking.data_ptr<int64_t>(), mode,
        values.defined() ? values.data_ptr<scalar_t>() : nullptr, temperature, g.data_ptr<scalar_t>(), reduction,
        lse.data_ptr<acc_t>(), grad_scores.data_ptr<scalar_t>(), mode == WeightMode::Position ? gv : nullptr,
        mode == WeightMode::Teacher ? gv : nullptr, launch_target());
  });
  return {grad_scores, grad_values};
}

// --- ops --------------------------------------------------------------------------------------

at::Tensor plackett_luce_loss_cuda(const at::Tensor& scores, const at::Tensor& ranking,
                                   const c10::optional<at::Tensor>& weights,
                                   const c10::optional<at::Tensor>& lengths,
                                   c10::optional<int64_t> top_k, c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(scores.device());
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor pi = ranking_arg(ranking, rows.scores, "ranking");
  const at::Tensor w = weights.has_value() ? like_arg(*weights, rows.scores, "weights", "scores") : at::Tensor();
  return pl_forward(rows, pi, w.defined() ? WeightMode::Position : WeightMode::Unit, w, 1.0, true, red);
}

std::tuple<at::Tensor, at::Tensor> plackett_luce_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& scores, const at::Tensor& ranking,
    const c10::optional<at::Tensor>& weights, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction, bool weights_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(scores.device());
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor pi = ranking_arg(ranking, rows.scores, "ranking");
  const at::Tensor w = weights.has_value() ? like_arg(*weights, rows.scores, "weights", "scores") : at::Tensor();
  TORCH_CHECK_VALUE(!weights_grad || w.defined(), "weights_grad needs weights");
  return pl_backward(rows, pi, w.defined() ? WeightMode::Position : WeightMode::Unit, w, 1.0, grad,
                     red, weights_grad);
}

std::tuple<at::Tensor, at::Tensor> listmle_cuda(const at::Tensor& scores, const at::Tensor& relevance,
                                                const c10::optional<at::Tensor>& lengths,
                                                c10::optional<int64_t> top_k, c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(scores.device());
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores");
  const at::Tensor ranking = rank_rows(relevance_arg(relevance, rows.scores), rows.lengths, at::Tensor());
  return {pl_forward(rows, ranking, WeightMode::Unit, at::Tensor(), 1.0, false, red), ranking};
}

// listmle, then plackett_luce_loss_backward on its ranking at an upstream gradient of 1 (see
// listwise_kd_loss_and_grads_cuda).
std::tuple<at::Tensor, at::Tensor, at::Tensor> listmle_and_grads_cuda(
    const at::Tensor& scores, const at::Tensor& relevance, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction) {
  auto [loss, ranking] = listmle_cuda(scores, relevance, lengths, top_k, reduction);
  const at::Tensor ones = at::ones(loss.sizes(), loss.options());
  at::Tensor grad_scores = std::get<0>(plackett_luce_loss_backward_cuda(
      ones, scores, ranking, c10::nullopt, lengths, top_k, reduction, false));
  return {loss, ranking, grad_scores};
}

std::tuple<at::Tensor, at::Tensor> pld_loss_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                                 const at::Tensor& target, double temperature,
                                                 c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto a = pld_args(student, teacher, target, temperature);
  const at::Tensor ranking = rank_rows(a.teacher, at::Tensor(), a.target);
  return {pl_forward(a.rows, ranking, WeightMode::Teacher, a.teacher, a.temperature, false, red), ranking};
}

std::tuple<at::Tensor, at::Tensor> pld_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const at::Tensor& ranking, double temperature, c10::string_view reduction, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto rows = pl_rows_args(student, c10::nullopt, c10::nullopt, "student_logits");
  const at::Tensor t = like_arg(teacher, rows.scores, "teacher_logits", "student_logits");
  const at::Tensor pi = ranking_arg(ranking, rows.scores, "ranking");
  return pl_backward(rows, pi, WeightMode::Teacher, t, temperature_arg(temperature, "temperature"),
                     grad, red, teacher_grad);
}

// pld_loss, then pld_loss_backward at an upstream gradient of 1 (see listwise_kd_loss_and_grads_cuda).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pld_loss_and_grads_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
    double temperature, c10::string_view reduction, bool teacher_grad) {
  auto [loss, ranking] = pld_loss_cuda(student, teacher, target, temperature, reduction);
  const at::Tensor ones = at::ones(loss.sizes(), loss.options());
  auto [grad_student, grad_teacher] =
      pld_loss_backward_cuda(ones, student, teacher, ranking, temperature, reduction, teacher_grad);
  return {loss, ranking, grad_student, grad_teacher};
}

at::Tensor listwise_kd_loss_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                 const c10::optional<at::Tensor>& lengths, double ts, double tt,
                                 c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto a = kd_args(student, teacher, lengths, ts, tt);
  const auto opts = a.rows.scores.options();
  at::Tensor row_loss = at::empty({a.rows.B}, opts.dtype(acc_type(opts.dtype().toScalarType())));
  if (a.rows.B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(), "listwise_kd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      plackett_luce::listwise_kd_forward<scalar_t, acc_t>(a.rows.view<scalar_t>(), a.teacher.data_ptr<scalar_t>(),
                                                          a.ts, a.tt, row_loss.data_ptr<acc_t>(), launch_target());
    });
  }
  return reduce_rows(row_loss, red, opts.dtype().toScalarType());
}

std::tuple<at::Tensor, at::Tensor> listwise_kd_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const c10::optional<at::Tensor>& lengths, double ts, double tt, c10::string_view reduction,
    bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto a = kd_args(student, teacher, lengths, ts, tt);
  check_row_loss_grad(grad, a.rows.scores, a.rows.B, red != Reduction::None);
  const auto opts = a.rows.scores.options();
  at::Tensor grad_student = at::empty({a.rows.B, a.rows.n}, opts);
  at::Tensor grad_teacher = at::empty({teacher_grad ? a.rows.B : 0, a.rows.n}, opts);
  if (a.rows.B == 0 || a.rows.n == 0) return {grad_student, grad_teacher};
  const at::Tensor g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(), "listwise_kd_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    plackett_luce::listwise_kd_backward<scalar_t, acc_t>(
        a.rows.view<scalar_t>(), a.teacher.data_ptr<scalar_t>(), a.ts, a.tt, g.data_ptr<scalar_t>(), red,
        grad_student.data_ptr<scalar_t>(), teacher_grad ? grad_teacher.data_ptr<scalar_t>() : nullptr,
        launch_target());
  });
  return {grad_student, grad_teacher};
}

// The forward kernel, then the backward kernel with an upstream gradient of 1: on the GPU each
// row's softmaxes are still computed twice (a fused kernel would write the gradients from the
// forward's registers), and the Autograd kernel's backward launches only a multiply.
std::tuple<at::Tensor, at::Tensor, at::Tensor> listwise_kd_loss_and_grads_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const c10::optional<at::Tensor>& lengths,
    double ts, double tt, c10::string_view reduction, bool teacher_grad) {
  at::Tensor loss = listwise_kd_loss_cuda(student, teacher, lengths, ts, tt, reduction);
  const at::Tensor ones = at::ones(loss.sizes(), loss.options());
  auto [grad_student, grad_teacher] =
      listwise_kd_loss_backward_cuda(ones, student, teacher, lengths, ts, tt, reduction, teacher_grad);
  return {loss, grad_student, grad_teacher};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) {
  m.impl("plackett_luce_loss", &plackett_luce_loss_cuda);
  m.impl("plackett_luce_loss_backward", &plackett_luce_loss_backward_cuda);
  m.impl("listmle", &listmle_cuda);
  m.impl("listmle_and_grads", &listmle_and_grads_cuda);
  m.impl("pld_loss", &pld_loss_cuda);
  m.impl("pld_loss_backward", &pld_loss_backward_cuda);
  m.impl("pld_loss_and_grads", &pld_loss_and_grads_cuda);
  m.impl("listwise_kd_loss", &listwise_kd_loss_cuda);
  m.impl("listwise_kd_loss_backward", &listwise_kd_loss_backward_cuda);
  m.impl("listwise_kd_loss_and_grads", &listwise_kd_loss_and_grads_cuda);
}

}  // namespace kdops::cuda
