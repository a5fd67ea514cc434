// Autograd of the Plackett-Luce family. listmle and pld_loss also return the ranking their sort
// built: it is non-differentiable and saved, and listmle's backward is plackett_luce_loss's with
// that ranking (the ranking is piecewise constant in the relevance, which gets no gradient).
// pld_loss and listwise_kd_loss take their temperatures as floats or, in their tensor_temperature
// overloads, as tensors that may require grad (autograd/temperature.h): one Function for both;
// the tensor overloads of *_and_grads also return the temperatures' gradients.
#include "autograd/autograd_common.h"
#include "autograd/temperature.h"

namespace kdops::autograd {
namespace {

using PLBackward = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
    c10::optional<int64_t>, c10::string_view, bool);

// The gradients an *_and_grads op computed at an upstream gradient of 1, times the upstream
// gradient g (a scalar, or one per row for reduction "none"); undefined where not needed.
std::tuple<at::Tensor, at::Tensor> scaled_grads(const at::Tensor& g, const std::string& reduction,
                                                bool student, bool teacher,
                                                const at::Tensor& unit_student,
                                                const at::Tensor& unit_teacher) {
  const at::Tensor per_item = reduction == "none" ? g.unsqueeze(1) : g;
  return {student ? unit_student.mul(per_item) : at::Tensor(),
          teacher ? unit_teacher.mul(per_item) : at::Tensor()};
}

// Which inputs of a distillation loss want a gradient: the student's and the teacher's scores and
// their temperatures (PLD's one temperature is the teacher's). A recorded backward forms a
// temperature's gradient from the gradient of the scores it divides (autograd/temperature.h), so
// it asks the backward op for those when either wants one (*_scores()).
struct DistillGrads {
  bool student, teacher, student_temperature, teacher_temperature;

  bool student_scores() const { return student || student_temperature; }
  bool teacher_scores() const { return teacher || teacher_temperature; }
  bool any() const { return student_scores() || teacher_scores(); }
  c10::List<bool> list() const { return c10::List<bool>({student, teacher, student_temperature, teacher_temperature}); }
  static DistillGrads of(const c10::List<bool>& l) { return {l[0], l[1], l[2], l[3]}; }
};

class PlackettLuceFunction : public torch::autograd::Function<PlackettLuceFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& scores,
                               const at::Tensor& ranking, const OptTensor& weights,
                               const OptTensor& lengths, c10::optional<int64_t> top_k,
                               c10::string_view reduction) {
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                        const OptTensor&, c10::optional<int64_t>,
                                        c10::string_view)>("plackett_luce_loss");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor loss = op.call(scores, ranking, weights, lengths, top_k, reduction);
    const bool weights_grad = weights.has_value() && weights->requires_grad();
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = c10::List<bool>({scores.requires_grad(), weights_grad});
    if (scores.requires_grad() || weights_grad) {
      ctx->save_for_backward(
          {scores, ranking, weights.value_or(at::Tensor()), lengths.value_or(at::Tensor())});
    }
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<PLBackward>("plackett_luce_loss_backward");
    const auto s = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    auto [grad_scores, grad_weights] =
        call_backward_op(op, grads[0], s[0], s[1], optional_of(s[2]), optional_of(s[3]),
                         ctx->saved_data["top_k"].toOptional<int64_t>(),
                         ctx->saved_data["reduction"].toStringRef(), needs[1]);
    return {if_needed(needs[0], grad_scores), at::Tensor(), if_needed(needs[1], grad_weights),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// As ListwiseKDFunction below: listmle_and_grads when the scores require grad.
class ListMLEFunction : public torch::autograd::Function<ListMLEFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& scores,
                               const at::Tensor& relevance, const OptTensor& lengths,
                               c10::optional<int64_t> top_k, c10::string_view reduction) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const OptTensor&, c10::optional<int64_t>,
        c10::string_view)>("listmle");
    static auto with_grads = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const OptTensor&, c10::optional<int64_t>,
        c10::string_view)>("listmle_and_grads");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // no zero-filled gradient for the int64 ranking
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["reduction"] = std::string(reduction);
    if (!scores.requires_grad()) {
      auto [loss, ranking] = op.call(scores, relevance, lengths, top_k, reduction);
      ctx->mark_non_differentiable({ranking});
      return {loss, ranking};
    }
    auto [loss, ranking, grad_scores] = with_grads.call(scores, relevance, lengths, top_k, reduction);
    ctx->mark_non_differentiable({ranking});
    ctx->save_for_backward({scores, lengths.value_or(at::Tensor()), ranking, grad_scores});
    return {loss, ranking};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<PLBackward>("plackett_luce_loss_backward");
    if (!grads[0].defined()) return variable_list(5);  // only the ranking was used downstream
    const auto s = ctx->get_saved_variables();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    at::Tensor grad_scores;
    if (torch::autograd::GradMode::is_enabled()) {  // recorded: the op that refuses double backward
      grad_scores = std::get<0>(op.call(grads[0], s[0], s[2], c10::nullopt, optional_of(s[1]),
                                        ctx->saved_data["top_k"].toOptional<int64_t>(), reduction,
                                        false));
    } else {
      grad_scores = std::get<0>(scaled_grads(grads[0], reduction, true, false, s[3], at::Tensor()));
    }
    return {grad_scores, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// As ListwiseKDFunction below: pld_loss_and_grads when an input requires grad.
template <typename Temperature>
class PLDFunction : public torch::autograd::Function<PLDFunction<Temperature>> {
  using T = TemperatureArg<Temperature>;
  static constexpr bool kTensor = kTensorTemperature<Temperature>;
  using WithGrads = std::conditional_t<kTensor, std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>,
                                       std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>>;

 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student,
                               const at::Tensor& teacher, const at::Tensor& target,
                               T temperature, c10::string_view reduction) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, T, c10::string_view)>(
        "pld_loss", temperature_overload<Temperature>());
    static auto with_grads = find_op<WithGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&, T,
                                               c10::string_view, bool)>(
        "pld_loss_and_grads", temperature_overload<Temperature>());
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // no zero-filled gradient for the int64 ranking
    const DistillGrads needs{student.requires_grad(), teacher.requires_grad(), false, requires_grad(temperature)};
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = needs.list();
    if (!needs.any()) {
      auto [loss, ranking] = op.call(student, teacher, target, temperature, reduction);
      ctx->mark_non_differentiable({ranking});
      return {loss, ranking};
    }
    // The tensor overload computes dL/dT itself (no teacher gradient needed for it).
    const WithGrads out = with_grads.call(student, teacher, target, temperature, reduction,
                                          needs.teacher);
    const at::Tensor &loss = std::get<0>(out), &ranking = std::get<1>(out);
    at::Tensor unit_temperature_grad;
    if constexpr (kTensor) unit_temperature_grad = std::get<4>(out);
    ctx->mark_non_differentiable({ranking});
    save_with_temperatures(ctx, {student, teacher, ranking, std::get<2>(out), std::get<3>(out), unit_temperature_grad},
                           std::array<Temperature, 1>{temperature});
    return {loss, ranking};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, T,
        c10::string_view, bool)>("pld_loss_backward", temperature_overload<Temperature>());
    if (!grads[0].defined()) return variable_list(5);  // only the ranking was used downstream
    const auto s = ctx->get_saved_variables();
    const auto needs = DistillGrads::of(ctx->saved_data["grads"].toBoolList());
    const auto [temperature] = saved_temperatures<Temperature, 1>(ctx, s);
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const bool none = reduction == "none";
    at::Tensor grad_student, grad_teacher, grad_temperature;
    if (torch::autograd::GradMode::is_enabled()) {  // recorded: the op that refuses double backward
      std::tie(grad_student, grad_teacher) =
          op.call(grads[0], s[0], s[1], s[2], temperature, reduction, needs.teacher_scores());
      if constexpr (kTensor) {
        if (needs.teacher_temperature) grad_temperature = logits_temperature_grad(s[1], grad_teacher, temperature);
      }
    } else {
      std::tie(grad_student, grad_teacher) =
          scaled_grads(grads[0], reduction, needs.student, needs.teacher, s[3], s[4]);
      if constexpr (kTensor) {
        if (needs.teacher_temperature) grad_temperature = scaled_temperature_grad(grads[0], s[5], none, temperature);
      }
    }
    return {if_needed(needs.student, grad_student), if_needed(needs.teacher, grad_teacher), at::Tensor(),
            grad_temperature, at::Tensor()};
  }
};

// When an input requires grad, the forward runs listwise_kd_loss_and_grads: the loss and its
// gradients for an upstream gradient of 1, from the same softmaxes (the tensor_temperature
// overload: the temperatures' too), and the backward scales them by the upstream gradient (per
// row for reduction "none"). A backward that is itself recorded (create_graph=True) calls
// listwise_kd_loss_backward instead, which refuses double backward.
template <typename Temperature>
class ListwiseKDFunction : public torch::autograd::Function<ListwiseKDFunction<Temperature>> {
  using T = TemperatureArg<Temperature>;
  static constexpr bool kTensor = kTensorTemperature<Temperature>;
  using WithGrads = std::conditional_t<kTensor, std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>,
                                       std::tuple<at::Tensor, at::Tensor, at::Tensor>>;

 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student,
                               const at::Tensor& teacher, const OptTensor& lengths,
                               T student_temperature, T teacher_temperature,
                               c10::string_view reduction) {
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                        T, T, c10::string_view)>(
        "listwise_kd_loss", temperature_overload<Temperature>());
    static auto with_grads = find_op<WithGrads(const at::Tensor&, const at::Tensor&, const OptTensor&, T, T,
                                               c10::string_view, bool)>(
        "listwise_kd_loss_and_grads", temperature_overload<Temperature>());
    at::AutoDispatchBelowADInplaceOrView guard;
    const DistillGrads needs{student.requires_grad(), teacher.requires_grad(),
                             requires_grad(student_temperature), requires_grad(teacher_temperature)};
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = needs.list();
    if (!needs.any()) {
      return {op.call(student, teacher, lengths, student_temperature, teacher_temperature, reduction)};
    }
    // The tensor overload computes dL/dTs and dL/dTt itself (no teacher gradient needed for them).
    const WithGrads out = with_grads.call(student, teacher, lengths, student_temperature, teacher_temperature,
                                          reduction, needs.teacher);
    const at::Tensor& loss = std::get<0>(out);
    at::Tensor unit_ts, unit_tt;
    if constexpr (kTensor) {
      unit_ts = std::get<3>(out);
      unit_tt = std::get<4>(out);
    }
    // The loss (an output: saved without a reference cycle) only for a recorded backward's dL/dTs.
    save_with_temperatures(ctx,
                           {student, teacher, lengths.value_or(at::Tensor()), std::get<1>(out), std::get<2>(out),
                            needs.student_temperature ? loss : at::Tensor(), unit_ts, unit_tt},
                           std::array<Temperature, 2>{student_temperature, teacher_temperature});
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, T, T,
        c10::string_view, bool)>("listwise_kd_loss_backward", temperature_overload<Temperature>());
    const auto s = ctx->get_saved_variables();
    const auto needs = DistillGrads::of(ctx->saved_data["grads"].toBoolList());
    const auto [ts, tt] = saved_temperatures<Temperature, 2>(ctx, s);
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const bool none = reduction == "none";
    at::Tensor grad_student, grad_teacher, grad_ts, grad_tt;
    if (torch::autograd::GradMode::is_enabled()) {  // recorded: the op that refuses double backward
      std::tie(grad_student, grad_teacher) =
          op.call(grads[0], s[0], s[1], optional_of(s[2]), ts, tt, reduction, needs.teacher_scores());
      if constexpr (kTensor) {
        if (needs.student_temperature) grad_ts = student_temperature_grad(grads[0], s[5], s[0], grad_student, ts);
        if (needs.teacher_temperature) grad_tt = logits_temperature_grad(s[1], grad_teacher, tt);
      }
    } else {
      std::tie(grad_student, grad_teacher) =
          scaled_grads(grads[0], reduction, needs.student, needs.teacher, s[3], s[4]);
      if constexpr (kTensor) {
        if (needs.student_temperature) grad_ts = scaled_temperature_grad(grads[0], s[6], none, ts);
        if (needs.teacher_temperature) grad_tt = scaled_temperature_grad(grads[0], s[7], none, tt);
      }
    }
    return {if_needed(needs.student, grad_student), if_needed(needs.teacher, grad_teacher), at::Tensor(),
            grad_ts, grad_tt, at::Tensor()};
  }
};

at::Tensor plackett_luce_loss_autograd(const at::Tensor& scores, const at::Tensor& ranking,
                                       const OptTensor& weights, const OptTensor& lengths,
                                       c10::optional<int64_t> top_k, c10::string_view reduction) {
  return PlackettLuceFunction::apply(scores, ranking, weights, lengths, top_k, reduction)[0];
}

std::tuple<at::Tensor, at::Tensor> listmle_autograd(const at::Tensor& scores,
                                                    const at::Tensor& relevance,
                                                    const OptTensor& lengths,
                                                    c10::optional<int64_t> top_k,
                                                    c10::string_view reduction) {
  auto out = ListMLEFunction::apply(scores, relevance, lengths, top_k, reduction);
  return {out[0], out[1]};
}

template <typename Temperature>
std::tuple<at::Tensor, at::Tensor> pld_loss_autograd(const at::Tensor& student,
                                                     const at::Tensor& teacher,
                                                     const at::Tensor& target,
                                                     TemperatureArg<Temperature> temperature,
                                                     c10::string_view reduction) {
  auto out = PLDFunction<Temperature>::apply(student, teacher, target, temperature, reduction);
  return {out[0], out[1]};
}

template <typename Temperature>
at::Tensor listwise_kd_loss_autograd(const at::Tensor& student, const at::Tensor& teacher,
                                     const OptTensor& lengths,
                                     TemperatureArg<Temperature> student_temperature,
                                     TemperatureArg<Temperature> teacher_temperature,
                                     c10::string_view reduction) {
  return ListwiseKDFunction<Temperature>::apply(student, teacher, lengths, student_temperature,
                                                teacher_temperature, reduction)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, Autograd, m) {
  m.impl("plackett_luce_loss", &plackett_luce_loss_autograd);
  m.impl("plackett_luce_loss_backward", no_double_backward_kernel());
  m.impl("listmle", &listmle_autograd);
  m.impl("listmle_and_grads", no_double_backward_kernel());
  m.impl("pld_loss", &pld_loss_autograd<double>);
  m.impl("pld_loss_backward", no_double_backward_kernel());
  m.impl("pld_loss_and_grads", no_double_backward_kernel());
  m.impl("listwise_kd_loss", &listwise_kd_loss_autograd<double>);
  m.impl("listwise_kd_loss_backward", no_double_backward_kernel());
  m.impl("listwise_kd_loss_and_grads", no_double_backward_kernel());
  m.impl("pld_loss.tensor_temperature", &pld_loss_autograd<at::Tensor>);
  m.impl("pld_loss_backward.tensor_temperature", no_double_backward_kernel());
  m.impl("pld_loss_and_grads.tensor_temperature", no_double_backward_kernel());
  m.impl("listwise_kd_loss.tensor_temperature", &listwise_kd_loss_autograd<at::Tensor>);
  m.impl("listwise_kd_loss_backward.tensor_temperature", no_double_backward_kernel());
  m.impl("listwise_kd_loss_and_grads.tensor_temperature", no_double_backward_kernel());
}

}  // namespace kdops::autograd
