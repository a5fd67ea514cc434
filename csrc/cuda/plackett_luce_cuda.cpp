// The Plackett-Luce family on CUDA: the ops (argument checks, outputs, the permutation check's
// assert, long rows' ranking by at::sort, the per-row losses' reduction) around the kernels of
// plackett_luce_warp_kernels.cu, plackett_luce_kernels.cu and listwise_kd_kernels.cu
// (plackett_luce_kernels.h). Each op is one request: a forward asks for the loss, a backward for
// the gradients, an *_and_grads op for both, which the kernels compute in one pass.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/lt.h>
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

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Reduces per-row losses (acc dtype) to the op's output in `dtype`: one reduction launch ('mean'
// of no rows is 0, their sum), and a cast for half outputs.
at::Tensor reduce_rows(const at::Tensor& row_loss, Reduction reduction, at::ScalarType dtype) {
  if (reduction == Reduction::None) return row_loss.to(dtype);
  const bool mean = reduction == Reduction::Mean && row_loss.numel() > 0;
  return (mean ? row_loss.mean() : row_loss.sum()).to(dtype);
}

// What a call of the PL kernels is given and asks for (see plackett_luce::PLRowsCall): the
// ranking given (a user's: checked when `check`; a forward's), or computed from keys (and
// first: PLD's target); the loss, and the gradients at the upstream gradient `grad` (undefined:
// 1, the *_and_grads ops), values' too when values_grad.
struct PLRequest {
  const PLRowsArgs& rows;
  WeightMode mode = WeightMode::Unit;
  at::Tensor values;  // weights or teacher, or undefined
  double temperature = 1;
  at::Tensor ranking, keys, first;  // ranking given, or keys (and first) to rank by
  bool check = false;
  bool loss = true;
  bool grads = false;
  at::Tensor grad;
  Reduction reduction = Reduction::Mean;
  bool values_grad = false;
};

struct PLResult {
  at::Tensor loss, ranking, grad_scores, grad_values;
};

// Runs the PL kernels for r: rows of up to kMaxWarpRowItems in one launch (a warp per row);
// longer rows a block per row (a ranking kernel, or at::sort for rows too long for it, then
// the loss or the gradient kernel). grad_values is [B, n] when values_grad, else [0, n].
PLResult run_pl(const PLRequest& r) {
  const PLRowsArgs& rows = r.rows;
  const int64_t B = rows.B, n = rows.n;
  const auto opts = rows.scores.options();
  const at::ScalarType dtype = opts.dtype().toScalarType();
  PLResult out;
  out.ranking = r.keys.defined() ? at::empty({B, n}, opts.dtype(at::kLong)) : r.ranking;
  at::Tensor row_loss;
  if (r.loss) row_loss = at::empty({B}, opts.dtype(acc_type(dtype)));
  if (r.grads) {
    out.grad_scores = at::empty({B, n}, opts);
    out.grad_values = at::empty({r.values_grad ? B : 0, n}, opts);
  }
  std::optional<at::Tensor> row_ok;  // a user's ranking: the per-row permutation flags
  if (r.check && B > 0) row_ok = at::empty({B}, opts.dtype(at::kBool));
  std::optional<at::Tensor> args_ok;  // lengths / PLD's target: the kernels' per-row range flags
  if (B > 0 && (rows.lengths.defined() || r.first.defined())) args_ok = at::empty({B}, opts.dtype(at::kBool));
  const at::Tensor g = r.grad.defined() ? r.grad.contiguous() : at::Tensor();
  const LaunchTarget on = launch_target();
  if (B > 0) {  // also where n = 0: the kernel flags the lengths and writes the rows' losses
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(), "plackett_luce_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      plackett_luce::PLRowsCall<scalar_t, acc_t> c;
      c.v = rows.view<scalar_t>();
      c.mode = r.mode;
      c.values = r.values.defined() ? r.values.data_ptr<scalar_t>() : nullptr;
      c.temperature = r.temperature;
      c.keys = r.keys.defined() ? r.keys.data_ptr<scalar_t>() : nullptr;
      c.first = r.first.defined() ? r.first.data_ptr<int64_t>() : nullptr;
      c.ranking = out.ranking.data_ptr<int64_t>();
      c.row_ok = row_ok ? row_ok->data_ptr<bool>() : nullptr;
      c.args_ok = args_ok ? args_ok->data_ptr<bool>() : nullptr;
      c.row_loss = r.loss ? row_loss.data_ptr<acc_t>() : nullptr;
      c.grad = g.defined() ? g.data_ptr<scalar_t>() : nullptr;
      c.reduction = r.reduction;
      if (r.grads) {
        c.grad_scores = out.grad_scores.data_ptr<scalar_t>();
        scalar_t* gv = r.values_grad ? out.grad_values.data_ptr<scalar_t>() : nullptr;
        c.grad_weights = r.mode == WeightMode::Position ? gv : nullptr;
        c.grad_teacher = r.mode == WeightMode::Teacher ? gv : nullptr;
      }
      if (n <= plackett_luce::kMaxWarpRowItems) {
        plackett_luce::warp_rows(c, on);
        return;
      }
      if (c.keys != nullptr && !plackett_luce::rank_rows(c, on)) {
        // Rows too long for the block sort: torch's stable sort has the same order (NaN first,
        // -0 ties +0, ties by index); padding keyed -inf stays after the valid items, which all
        // have lower indices.
        at::Tensor k = r.keys;
        if (rows.lengths.defined()) {
          const at::Tensor columns = at::arange(n, rows.lengths.options()).unsqueeze(0);
          k = at::where(at::lt(columns, rows.lengths.unsqueeze(1)), r.keys,
                        at::full({}, -std::numeric_limits<double>::infinity(), r.keys.options()));
        }
        at::Tensor order = std::get<1>(at::sort(k, /*stable=*/true, /*dim=*/1, /*descending=*/true));
        if (r.first.defined()) {
          plackett_luce::move_to_front(order.data_ptr<int64_t>(), c.first, B, n, c.ranking, on);
        } else {
          out.ranking = order;
          c.ranking = out.ranking.data_ptr<int64_t>();
        }
      }
      if (r.grads) {
        at::Tensor lse = at::empty({B, n}, opts.dtype(acc_type(dtype)));
        plackett_luce::backward(c, lse.data_ptr<acc_t>(), on);
      } else {
        // The permutation check's bitmap: zeroed words, a user's ranking only.
        at::Tensor bitmap = row_ok ? at::zeros({B, (n + 31) / 32}, opts.dtype(at::kInt)) : at::Tensor();
        plackett_luce::forward(c, row_ok ? reinterpret_cast<unsigned int*>(bitmap.data_ptr<int>()) : nullptr, on);
      }
    });
  }
  // Device-side asserts: no host read (the op fails at the next sync; the simulator at once).
  if (args_ok) at::_assert_async(args_ok->all(), r.first.defined() ? target_message(n) : lengths_message(n));
  if (row_ok) {
    at::_assert_async(row_ok->all(),
                      "ranking is not a permutation of 0..len-1 in some row (len = lengths[b], or "
                      "n): its first len entries must hold each of the row's valid items exactly once");
  }
  if (r.loss) out.loss = reduce_rows(row_loss, r.reduction, dtype);
  return out;
}

// A backward op's request r: the gradients (no loss) of its given ranking at the upstream
// gradient `grad` (checked by the op), the values' too when values_grad.
std::tuple<at::Tensor, at::Tensor> pl_gradients(PLRequest r, const at::Tensor& grad, Reduction reduction,
                                                bool values_grad) {
  r.loss = false;
  r.grads = true;
  r.grad = grad;
  r.reduction = reduction;
  r.values_grad = values_grad;
  PLResult out = run_pl(r);
  return {out.grad_scores, out.grad_values};
}

// --- ops --------------------------------------------------------------------------------------

at::Tensor plackett_luce_loss_cuda(const at::Tensor& scores, const at::Tensor& ranking,
                                   const c10::optional<at::Tensor>& weights,
                                   const c10::optional<at::Tensor>& lengths,
                                   c10::optional<int64_t> top_k, c10::string_view reduction) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(scores.device());
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores", /*kernels_check_indices=*/true);
  PLRequest r{rows};
  r.ranking = ranking_arg(ranking, rows.scores, "ranking");
  if (weights.has_value()) {
    r.values = like_arg(*weights, rows.scores, "weights", "scores");
    r.mode = WeightMode::Position;
  }
  r.check = true;
  r.reduction = red;
  return run_pl(r).loss;
}

std::tuple<at::Tensor, at::Tensor> plackett_luce_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& scores, const at::Tensor& ranking,
    const c10::optional<at::Tensor>& weights, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction, bool weights_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(scores.device());
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores", /*kernels_check_indices=*/true);
  check_row_loss_grad(grad, rows.scores, rows.B, red != Reduction::None);
  PLRequest r{rows};
  r.ranking = ranking_arg(ranking, rows.scores, "ranking");
  if (weights.has_value()) {
    r.values = like_arg(*weights, rows.scores, "weights", "scores");
    r.mode = WeightMode::Position;
  }
  TORCH_CHECK_VALUE(!weights_grad || r.values.defined(), "weights_grad needs weights");
  return pl_gradients(r, grad, red, weights_grad);
}

// ListMLE's request: the ranking by relevance, the loss, and the gradient when `grads` (at an
// upstream gradient of 1).
PLResult listmle_request(const at::Tensor& scores, const at::Tensor& relevance,
                         const c10::optional<at::Tensor>& lengths, c10::optional<int64_t> top_k,
                         c10::string_view reduction, bool grads) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(scores.device());
  const auto rows = pl_rows_args(scores, lengths, top_k, "scores", /*kernels_check_indices=*/true);
  PLRequest r{rows};
  r.keys = relevance_arg(relevance, rows.scores);
  r.grads = grads;
  r.reduction = red;
  return run_pl(r);
}

std::tuple<at::Tensor, at::Tensor> listmle_cuda(const at::Tensor& scores, const at::Tensor& relevance,
                                                const c10::optional<at::Tensor>& lengths,
                                                c10::optional<int64_t> top_k, c10::string_view reduction) {
  PLResult out = listmle_request(scores, relevance, lengths, top_k, reduction, false);
  return {out.loss, out.ranking};
}

// listmle and plackett_luce_loss_backward's gradient on its ranking at an upstream gradient of 1,
// from the same kernel (rows past kMaxWarpRowItems: the ranking kernel and the gradient kernel,
// which also sums the loss).
std::tuple<at::Tensor, at::Tensor, at::Tensor> listmle_and_grads_cuda(
    const at::Tensor& scores, const at::Tensor& relevance, const c10::optional<at::Tensor>& lengths,
    c10::optional<int64_t> top_k, c10::string_view reduction) {
  PLResult out = listmle_request(scores, relevance, lengths, top_k, reduction, true);
  return {out.loss, out.ranking, out.grad_scores};
}

// PLD's request: the ranking by the teacher with the target first, the loss, and the gradients
// when `grads` (at an upstream gradient of 1; the teacher's when teacher_grad).
PLResult pld_request(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
                     double temperature, c10::string_view reduction, bool grads, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto a = pld_args(student, teacher, target, temperature, /*kernels_check_indices=*/true);
  PLRequest r{a.rows};
  r.mode = WeightMode::Teacher;
  r.values = a.teacher;
  r.temperature = a.temperature;
  r.keys = a.teacher;
  r.first = a.target;
  r.grads = grads;
  r.reduction = red;
  r.values_grad = teacher_grad;
  return run_pl(r);
}

std::tuple<at::Tensor, at::Tensor> pld_loss_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                                 const at::Tensor& target, double temperature,
                                                 c10::string_view reduction) {
  PLResult out = pld_request(student, teacher, target, temperature, reduction, false, false);
  return {out.loss, out.ranking};
}

std::tuple<at::Tensor, at::Tensor> pld_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const at::Tensor& ranking, double temperature, c10::string_view reduction, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto rows = pl_rows_args(student, c10::nullopt, c10::nullopt, "student_logits");
  check_row_loss_grad(grad, rows.scores, rows.B, red != Reduction::None);
  PLRequest r{rows};
  r.mode = WeightMode::Teacher;
  r.values = like_arg(teacher, rows.scores, "teacher_logits", "student_logits");
  r.temperature = temperature_arg(temperature, "temperature");
  r.ranking = ranking_arg(ranking, rows.scores, "ranking");
  return pl_gradients(r, grad, red, teacher_grad);
}

// pld_loss and pld_loss_backward's gradients at an upstream gradient of 1, from the same kernel
// (see listmle_and_grads_cuda).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pld_loss_and_grads_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
    double temperature, c10::string_view reduction, bool teacher_grad) {
  PLResult out = pld_request(student, teacher, target, temperature, reduction, true, teacher_grad);
  return {out.loss, out.ranking, out.grad_scores, out.grad_values};
}

// Listwise KD: the loss (when `loss`) and the gradients (when `grads`, at the upstream gradient
// `grad`, undefined: 1) in one launch.
struct KDResult {
  at::Tensor loss, grad_student, grad_teacher;
};

KDResult run_listwise_kd(const at::Tensor& student, const at::Tensor& teacher,
                         const c10::optional<at::Tensor>& lengths, double ts, double tt,
                         c10::string_view reduction, bool loss, bool grads, const at::Tensor& grad,
                         bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto a = kd_args(student, teacher, lengths, ts, tt, /*kernels_check_indices=*/true);
  const int64_t B = a.rows.B, n = a.rows.n;
  if (grad.defined()) check_row_loss_grad(grad, a.rows.scores, B, red != Reduction::None);
  const auto opts = a.rows.scores.options();
  const at::ScalarType dtype = opts.dtype().toScalarType();
  KDResult out;
  at::Tensor row_loss;
  if (loss) row_loss = at::empty({B}, opts.dtype(acc_type(dtype)));
  if (grads) {
    out.grad_student = at::empty({B, n}, opts);
    out.grad_teacher = at::empty({teacher_grad ? B : 0, n}, opts);
  }
  std::optional<at::Tensor> args_ok;  // lengths: the kernel's per-row range flags
  if (B > 0 && a.rows.lengths.defined()) args_ok = at::empty({B}, opts.dtype(at::kBool));
  const at::Tensor g = grad.defined() ? grad.contiguous() : at::Tensor();
  if (B > 0) {  // also where n = 0: the kernel flags the lengths and writes the rows' losses
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(), "listwise_kd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      plackett_luce::KDRowsCall<scalar_t, acc_t> c{a.rows.view<scalar_t>(), a.teacher.data_ptr<scalar_t>(), a.ts, a.tt};
      c.args_ok = args_ok ? args_ok->data_ptr<bool>() : nullptr;
      c.row_loss = loss ? row_loss.data_ptr<acc_t>() : nullptr;
      c.grad = g.defined() ? g.data_ptr<scalar_t>() : nullptr;
      c.reduction = red;
      c.grad_student = grads ? out.grad_student.data_ptr<scalar_t>() : nullptr;
      c.grad_teacher = grads && teacher_grad ? out.grad_teacher.data_ptr<scalar_t>() : nullptr;
      plackett_luce::listwise_kd_rows(c, launch_target());
    });
  }
  if (args_ok) at::_assert_async(args_ok->all(), lengths_message(n));
  if (loss) out.loss = reduce_rows(row_loss, red, dtype);
  return out;
}

at::Tensor listwise_kd_loss_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                 const c10::optional<at::Tensor>& lengths, double ts, double tt,
                                 c10::string_view reduction) {
  return run_listwise_kd(student, teacher, lengths, ts, tt, reduction, true, false, at::Tensor(), false).loss;
}

std::tuple<at::Tensor, at::Tensor> listwise_kd_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const c10::optional<at::Tensor>& lengths, double ts, double tt, c10::string_view reduction,
    bool teacher_grad) {
  KDResult out = run_listwise_kd(student, teacher, lengths, ts, tt, reduction, false, true, grad, teacher_grad);
  return {out.grad_student, out.grad_teacher};
}

// The loss and the gradients at an upstream gradient of 1, from one kernel: the Autograd kernel's
// backward launches only a multiply.
std::tuple<at::Tensor, at::Tensor, at::Tensor> listwise_kd_loss_and_grads_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const c10::optional<at::Tensor>& lengths,
    double ts, double tt, c10::string_view reduction, bool teacher_grad) {
  KDResult out = run_listwise_kd(student, teacher, lengths, ts, tt, reduction, true, true, at::Tensor(), teacher_grad);
  return {out.loss, out.grad_student, out.grad_teacher};
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
