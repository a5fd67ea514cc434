// The Plackett-Luce family on CUDA: the ops (argument checks, outputs, the index checks'
// device-side asserts, the ranking of rows too long for the kernels' in-block sort by at::sort)
// around the kernels of plackett_luce_warp_kernels.cu, plackett_luce_kernels.cu and
// listwise_kd_kernels.cu (plackett_luce_kernels.h). Each op is one request: a forward asks for the
// loss, a backward for the gradients, an *_and_grads op for both, which the kernels compute in one
// launch, the reduction of the rows' losses and of their index checks included.
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

#include <array>
#include <limits>
#include <string>
#include <type_traits>

#include "common/plackett_luce_inputs.h"
#include "common/reduction.h"
#include "cuda/device.h"
#include "cuda/grid_scratch.h"
#include "cuda/plackett_luce_kernels.h"

namespace kdops::cuda {
namespace {

using plackett_luce::WeightMode;

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// A temperature for the kernels (plackett_luce::Temperature): a float op's value, or a tensor's
// (the tensor_temperature overloads): read on the host when the tensor is in host memory (no
// sync), else left in device memory as it is, float32 or float64 (another dtype cast to float32
// on the device), where the kernel reads it and flags its value, which the op asserts on the
// device (no host read).
struct TemperatureInput {
  plackett_luce::Temperature t;
  at::Tensor kept;  // the device memory the kernel reads, or undefined: t.value
  const char* name = "temperature";
};

TemperatureInput temperature_input(double value, const char* name) {
  TemperatureInput in;
  in.t.value = temperature_arg(value, name);
  in.name = name;
  return in;
}

TemperatureInput temperature_input(const at::Tensor& t, const at::Tensor& scores, const char* name) {
  check_temperature_tensor(t, scores, name);
  if (!is_device_memory(t)) return temperature_input(t.item<double>(), name);
  TemperatureInput in;
  in.kept = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ? t : t.to(at::kFloat);
  in.t.at = in.kept.data_ptr();
  in.t.is_double = in.kept.scalar_type() == at::kDouble;
  in.name = name;
  return in;
}

// A temperature argument of an op: a float schema's double, a tensor_temperature overload's tensor.
template <typename T>
using TemperatureArg = std::conditional_t<std::is_same_v<T, at::Tensor>, const at::Tensor&, double>;

TemperatureInput temperature_of(double value, const at::Tensor&, const char* name) {
  return temperature_input(value, name);
}
TemperatureInput temperature_of(const at::Tensor& t, const at::Tensor& scores, const char* name) {
  return temperature_input(t, scores, name);
}

// A per-call output of B rows: [B] for 'none', else 0-dim (no rows: 0), which the kernel writes.
at::Tensor row_output(int64_t B, Reduction reduction, const at::TensorOptions& opts) {
  if (reduction == Reduction::None) return at::empty({B}, opts);
  return B > 0 ? at::empty({}, opts) : at::zeros({}, opts);
}

// What a kernel call reduces over its rows (plackett_luce::RowsOut): the loss, the lengths /
// target flag (args), the permutation flag (ranking), the flags of the temperatures read on the
// device, and `temperature_grads` temperatures' gradients (PLD 1, listwise KD 2).
struct RowsAsk {
  bool loss = false, args = false, ranking = false;
  std::array<const TemperatureInput*, 2> temperatures{};
  int temperature_grads = 0;
};

// A tensor's data, or nullptr when it is undefined or empty.
template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

// The outputs of a RowsAsk and their grid_sum scratch (its flags: Flags).
template <typename scalar_t, typename acc_t>
struct RowsOutputs {
  at::Tensor loss, args_ok, ranking_ok;
  std::array<at::Tensor, 2> temperature_ok, temperature_grad;
  GridScratch<acc_t> scratch;

  static bool grid_reduces(int64_t B, Reduction reduction, const RowsAsk& ask) {
    const bool reduced = reduction != Reduction::None && (ask.loss || ask.temperature_grads > 0);
    return B > 0 && (ask.args || ask.ranking || reduced);
  }

  RowsOutputs(int64_t B, int64_t n, Reduction reduction, const RowsAsk& ask, const at::TensorOptions& opts)
      : scratch(grid_reduces(B, reduction, ask) ? plackett_luce::row_blocks(B, n) : 0, plackett_luce::kRowSums,
                opts) {
    const auto flag = [&](bool asked) { return B > 0 && asked ? at::empty({}, opts.dtype(at::kBool)) : at::Tensor(); };
    if (ask.loss) loss = row_output(B, reduction, opts);
    args_ok = flag(ask.args);
    ranking_ok = flag(ask.ranking);
    for (int k = 0; k < 2; ++k) {
      temperature_ok[k] = flag(ask.temperatures[k] != nullptr && ask.temperatures[k]->kept.defined());
      if (k < ask.temperature_grads) temperature_grad[k] = row_output(B, reduction, opts.dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
  }

  plackett_luce::RowsOut<scalar_t, acc_t> view() const {
    plackett_luce::RowsOut<scalar_t, acc_t> o;
    o.loss = data_or_null<scalar_t>(loss);
    o.args_ok = data_or_null<bool>(args_ok);
    o.ranking_ok = data_or_null<bool>(ranking_ok);
    for (int k = 0; k < 2; ++k) {
      o.temperature_ok[k] = data_or_null<bool>(temperature_ok[k]);
      o.temperature_grad[k] = data_or_null<acc_t>(temperature_grad[k]);
    }
    o.partial_sums = scratch.partial_sum();
    o.partial_count = scratch.partial_count();
    o.done = scratch.done();
    return o;
  }
};

// The flags a call's kernel wrote (undefined: not checked), asserted on the device: no host read;
// the op fails at the next sync (the simulator at once).
struct Flags {
  at::Tensor args_ok, ranking_ok;
  std::array<at::Tensor, 2> temperature_ok;

  template <typename Outputs>
  void take(const Outputs& o) {
    args_ok = o.args_ok;
    ranking_ok = o.ranking_ok;
    temperature_ok = o.temperature_ok;
  }

  void assert_all(const std::string& args_message, const RowsAsk& ask) const {
    if (args_ok.defined()) at::_assert_async(args_ok, args_message);
    if (ranking_ok.defined()) {
      at::_assert_async(ranking_ok,
                        "ranking is not a permutation of 0..len-1 in some row (len = lengths[b], or "
                        "n): its first len entries must hold each of the row's valid items exactly once");
    }
    for (int k = 0; k < 2; ++k) {
      if (temperature_ok[k].defined()) {
        at::_assert_async(temperature_ok[k], std::string(ask.temperatures[k]->name) +
                                                 " must be a positive finite number (read on the device)");
      }
    }
  }
};

// What a call of the PL kernels is given and asks for (see plackett_luce::PLRowsCall): the
// ranking given (a user's: checked when `check`; a forward's), or computed from keys (and
// first: PLD's target); the loss, and the gradients at the upstream gradient `grad` (undefined:
// 1, the *_and_grads ops), values' too when values_grad.
struct PLRequest {
  const PLRowsArgs& rows;
  WeightMode mode = WeightMode::Unit;
  at::Tensor values;  // weights or teacher, or undefined
  TemperatureInput temperature;  // PLD's
  at::Tensor ranking, keys, first;  // ranking given, or keys (and first) to rank by
  bool check = false;
  bool loss = true;
  bool grads = false;
  bool temperature_grad = false;  // PLD's dL/dT at an upstream gradient of 1, with the gradients
  at::Tensor grad;
  Reduction reduction = Reduction::Mean;
  bool values_grad = false;
};

struct PLResult {
  at::Tensor loss, ranking, grad_scores, grad_values, grad_temperature;
};

// Runs the PL kernels for r: rows of up to kMaxWarpRowItems in one launch (a warp per row);
// longer rows a block per row (a ranking kernel, or at::sort for rows too long for it, then
// the loss or the gradient kernel). grad_values is [B, n] when values_grad, else [0, n].
PLResult run_pl(const PLRequest& r) {
  const PLRowsArgs& rows = r.rows;
  const int64_t B = rows.B, n = rows.n;
  const auto opts = rows.scores.options();
  PLResult out;
  out.ranking = r.keys.defined() ? at::empty({B, n}, opts.dtype(at::kLong)) : r.ranking;
  if (r.grads) {
    out.grad_scores = at::empty({B, n}, opts);
    out.grad_values = at::empty({r.values_grad ? B : 0, n}, opts);
  }
  RowsAsk ask;
  ask.loss = r.loss;
  ask.args = rows.lengths.defined() || r.first.defined();  // the kernels flag them per row
  ask.ranking = r.check;
  if (r.mode == WeightMode::Teacher) ask.temperatures[0] = &r.temperature;
  ask.temperature_grads = r.temperature_grad ? 1 : 0;
  const at::Tensor g = r.grad.defined() ? r.grad.contiguous() : at::Tensor();
  const LaunchTarget on = launch_target();
  Flags flags;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scores.scalar_type(), "plackett_luce_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const RowsOutputs<scalar_t, acc_t> o(B, n, r.reduction, ask, opts);
    out.loss = o.loss;
    out.grad_temperature = o.temperature_grad[0];
    flags.take(o);
    if (B == 0) return;  // n = 0 still launches: the kernel flags the lengths and writes the losses
    plackett_luce::PLRowsCall<scalar_t, acc_t> c;
    c.v = rows.view<scalar_t>();
    c.mode = r.mode;
    c.values = r.values.defined() ? r.values.data_ptr<scalar_t>() : nullptr;
    c.temperature = r.temperature.t;
    c.keys = r.keys.defined() ? r.keys.data_ptr<scalar_t>() : nullptr;
    c.first = r.first.defined() ? r.first.data_ptr<int64_t>() : nullptr;
    c.ranking = out.ranking.data_ptr<int64_t>();
    c.out = o.view();
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
    if (c.keys != nullptr && !plackett_luce::ranks_in_block(c)) {
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
      c.keys = nullptr;  // ranked: the kernel reads c.ranking
    }
    if (r.grads) {
      at::Tensor lse = at::empty({B, n}, opts.dtype(acc_type(opts.dtype().toScalarType())));
      plackett_luce::backward(c, lse.data_ptr<acc_t>(), on);
    } else {
      // The permutation check's bitmap (each block zeroes its row's words), a user's ranking only.
      at::Tensor bitmap = r.check ? at::empty({B, (n + 31) / 32}, opts.dtype(at::kInt)) : at::Tensor();
      plackett_luce::forward(c, r.check ? reinterpret_cast<unsigned int*>(bitmap.data_ptr<int>()) : nullptr, on);
    }
  });
  flags.assert_all(r.first.defined() ? target_message(n) : lengths_message(n), ask);
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
// when `grads` (at an upstream gradient of 1; the teacher's when teacher_grad, the temperature's
// when temperature_grad).
PLResult pld_request(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
                     const TemperatureInput& temperature, c10::string_view reduction, bool grads, bool teacher_grad,
                     bool temperature_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  // temperature.t.value: checked by temperature_input (a device temperature's by the kernel)
  const auto a = pld_args(student, teacher, target, temperature.t.value, /*kernels_check_indices=*/true);
  PLRequest r{a.rows};
  r.mode = WeightMode::Teacher;
  r.values = a.teacher;
  r.temperature = temperature;
  r.keys = a.teacher;
  r.first = a.target;
  r.grads = grads;
  r.temperature_grad = temperature_grad;
  r.reduction = red;
  r.values_grad = teacher_grad;
  return run_pl(r);
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> pld_loss_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                                 const at::Tensor& target, TemperatureArg<T> temperature,
                                                 c10::string_view reduction) {
  PLResult out = pld_request(student, teacher, target, temperature_of(temperature, student, "temperature"), reduction,
                             false, false, false);
  return {out.loss, out.ranking};
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> pld_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const at::Tensor& ranking, TemperatureArg<T> temperature, c10::string_view reduction, bool teacher_grad) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  const auto rows = pl_rows_args(student, c10::nullopt, c10::nullopt, "student_logits");
  check_row_loss_grad(grad, rows.scores, rows.B, red != Reduction::None);
  PLRequest r{rows};
  r.mode = WeightMode::Teacher;
  r.values = like_arg(teacher, rows.scores, "teacher_logits", "student_logits");
  r.temperature = temperature_of(temperature, student, "temperature");
  r.ranking = ranking_arg(ranking, rows.scores, "ranking");
  return pl_gradients(r, grad, red, teacher_grad);
}

// pld_loss and pld_loss_backward's gradients at an upstream gradient of 1, from the same kernel
// (see listmle_and_grads_cuda).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pld_loss_and_grads_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
    double temperature, c10::string_view reduction, bool teacher_grad) {
  PLResult out = pld_request(student, teacher, target, temperature_input(temperature, "temperature"), reduction, true,
                             teacher_grad, false);
  return {out.loss, out.ranking, out.grad_scores, out.grad_values};
}

// The same, with dL/dT at an upstream gradient of 1 from the same kernel.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> pld_loss_and_grads_tt_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
    const at::Tensor& temperature, c10::string_view reduction, bool teacher_grad) {
  PLResult out = pld_request(student, teacher, target, temperature_input(temperature, student, "temperature"),
                             reduction, true, teacher_grad, true);
  return {out.loss, out.ranking, out.grad_scores, out.grad_values, out.grad_temperature};
}

// Listwise KD: the loss (when `loss`) and the gradients (when `grads`, at the upstream gradient
// `grad`, undefined: 1; the temperatures' too when temperature_grads) in one launch.
struct KDRequest {
  TemperatureInput ts, tt;
  bool loss = true;
  bool grads = false;
  at::Tensor grad;
  bool teacher_grad = false;
  bool temperature_grads = false;
};

struct KDResult {
  at::Tensor loss, grad_student, grad_teacher, grad_ts, grad_tt;
};

KDResult run_listwise_kd(const at::Tensor& student, const at::Tensor& teacher,
                         const c10::optional<at::Tensor>& lengths, c10::string_view reduction, const KDRequest& r) {
  const auto red = parse_reduction(reduction);
  const DeviceGuard guard(student.device());
  // the values: checked by temperature_input (a device temperature's by the kernel)
  const auto a = kd_args(student, teacher, lengths, r.ts.t.value, r.tt.t.value, /*kernels_check_indices=*/true);
  const int64_t B = a.rows.B, n = a.rows.n;
  if (r.grad.defined()) check_row_loss_grad(r.grad, a.rows.scores, B, red != Reduction::None);
  const auto opts = a.rows.scores.options();
  KDResult out;
  if (r.grads) {
    out.grad_student = at::empty({B, n}, opts);
    out.grad_teacher = at::empty({r.teacher_grad ? B : 0, n}, opts);
  }
  RowsAsk ask;
  ask.loss = r.loss;
  ask.args = a.rows.lengths.defined();
  ask.temperatures = {&r.ts, &r.tt};
  ask.temperature_grads = r.temperature_grads ? 2 : 0;
  const at::Tensor g = r.grad.defined() ? r.grad.contiguous() : at::Tensor();
  Flags flags;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.rows.scores.scalar_type(), "listwise_kd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const RowsOutputs<scalar_t, acc_t> o(B, n, red, ask, opts);
    out.loss = o.loss;
    out.grad_ts = o.temperature_grad[0];
    out.grad_tt = o.temperature_grad[1];
    flags.take(o);
    if (B == 0) return;  // n = 0 still launches: the kernel flags the lengths and writes the losses
    plackett_luce::KDRowsCall<scalar_t, acc_t> c{a.rows.view<scalar_t>(), a.teacher.data_ptr<scalar_t>(), r.ts.t,
                                                 r.tt.t};
    c.out = o.view();
    c.grad = g.defined() ? g.data_ptr<scalar_t>() : nullptr;
    c.reduction = red;
    c.grad_student = r.grads ? out.grad_student.data_ptr<scalar_t>() : nullptr;
    c.grad_teacher = r.grads && r.teacher_grad ? out.grad_teacher.data_ptr<scalar_t>() : nullptr;
    plackett_luce::listwise_kd_rows(c, launch_target());
  });
  flags.assert_all(lengths_message(n), ask);
  return out;
}

// The student's and the teacher's temperature of a call.
template <typename T>
KDRequest kd_request(const at::Tensor& student, TemperatureArg<T> ts, TemperatureArg<T> tt) {
  return {temperature_of(ts, student, "student_temperature"), temperature_of(tt, student, "teacher_temperature")};
}

template <typename T>
at::Tensor listwise_kd_loss_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                 const c10::optional<at::Tensor>& lengths, TemperatureArg<T> ts, TemperatureArg<T> tt,
                                 c10::string_view reduction) {
  return run_listwise_kd(student, teacher, lengths, reduction, kd_request<T>(student, ts, tt)).loss;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> listwise_kd_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
    const c10::optional<at::Tensor>& lengths, TemperatureArg<T> ts, TemperatureArg<T> tt, c10::string_view reduction,
    bool teacher_grad) {
  KDRequest r = kd_request<T>(student, ts, tt);
  r.loss = false;
  r.grads = true;
  r.grad = grad;
  r.teacher_grad = teacher_grad;
  KDResult out = run_listwise_kd(student, teacher, lengths, reduction, r);
  return {out.grad_student, out.grad_teacher};
}

// The loss and the gradients at an upstream gradient of 1, from one kernel: the Autograd kernel's
// backward launches only a multiply.
KDResult listwise_kd_and_grads(const at::Tensor& student, const at::Tensor& teacher,
                               const c10::optional<at::Tensor>& lengths, KDRequest r, c10::string_view reduction,
                               bool teacher_grad) {
  r.grads = true;
  r.teacher_grad = teacher_grad;
  return run_listwise_kd(student, teacher, lengths, reduction, r);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> listwise_kd_loss_and_grads_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const c10::optional<at::Tensor>& lengths,
    double ts, double tt, c10::string_view reduction, bool teacher_grad) {
  KDResult out = listwise_kd_and_grads(student, teacher, lengths, kd_request<double>(student, ts, tt), reduction, teacher_grad);
  return {out.loss, out.grad_student, out.grad_teacher};
}

// The same, with both temperatures' gradients at an upstream gradient of 1 from the same kernel.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> listwise_kd_loss_and_grads_tt_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const c10::optional<at::Tensor>& lengths,
    const at::Tensor& ts, const at::Tensor& tt, c10::string_view reduction, bool teacher_grad) {
  KDRequest r = kd_request<at::Tensor>(student, ts, tt);
  r.temperature_grads = true;
  KDResult out = listwise_kd_and_grads(student, teacher, lengths, r, reduction, teacher_grad);
  return {out.loss, out.grad_student, out.grad_teacher, out.grad_ts, out.grad_tt};
}

}  // namespace

// The float ops, and the tensor_temperature overloads (their temperatures in device memory).
TORCH_LIBRARY_IMPL(KDOPS_NS, KDOPS_DEVICE_KEY, m) {
  m.impl("plackett_luce_loss", &plackett_luce_loss_cuda);
  m.impl("plackett_luce_loss_backward", &plackett_luce_loss_backward_cuda);
  m.impl("listmle", &listmle_cuda);
  m.impl("listmle_and_grads", &listmle_and_grads_cuda);
  m.impl("pld_loss", &pld_loss_cuda<double>);
  m.impl("pld_loss_backward", &pld_loss_backward_cuda<double>);
  m.impl("pld_loss_and_grads", &pld_loss_and_grads_cuda);
  m.impl("listwise_kd_loss", &listwise_kd_loss_cuda<double>);
  m.impl("listwise_kd_loss_backward", &listwise_kd_loss_backward_cuda<double>);
  m.impl("listwise_kd_loss_and_grads", &listwise_kd_loss_and_grads_cuda);
  m.impl("pld_loss.tensor_temperature", &pld_loss_cuda<at::Tensor>);
  m.impl("pld_loss_backward.tensor_temperature", &pld_loss_backward_cuda<at::Tensor>);
  m.impl("pld_loss_and_grads.tensor_temperature", &pld_loss_and_grads_tt_cuda);
  m.impl("listwise_kd_loss.tensor_temperature", &listwise_kd_loss_cuda<at::Tensor>);
  m.impl("listwise_kd_loss_backward.tensor_temperature", &listwise_kd_loss_backward_cuda<at::Tensor>);
  m.impl("listwise_kd_loss_and_grads.tensor_temperature", &listwise_kd_loss_and_grads_tt_cuda);
}

}  // namespace kdops::cuda
