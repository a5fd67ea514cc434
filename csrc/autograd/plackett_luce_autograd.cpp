// Autograd of the Plackett-Luce family. listmle and pld_loss also return the ranking their sort
// built: it is non-differentiable and saved, and listmle's backward is plackett_luce_loss's with
// that ranking (the ranking is piecewise constant in the relevance, which gets no gradient).
#include "autograd/autograd_common.h"

namespace kdops::autograd {
namespace {

using PLBackward = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
    c10::optional<int64_t>, c10::string_view, bool);

// The gradients an *_and_grads op computed at an upstream gradient of 1, times the upstream
// gradient g (a scalar, or one per row for reduction "none"); undefined where not needed.
std::tuple<at::Tensor, at::Tensor> scaled_grads(const at::Tensor& g, const std::string& reduction,
                                                const c10::List<bool>& needs,
                                                const at::Tensor& unit_student,
                                                const at::Tensor& unit_teacher) {
  const at::Tensor per_item = reduction == "none" ? g.unsqueeze(1) : g;
  return {needs[0] ? unit_student.mul(per_item) : at::Tensor(),
          needs[1] ? unit_teacher.mul(per_item) : at::Tensor()};
}

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
      grad_scores = std::get<0>(scaled_grads(grads[0], reduction, c10::List<bool>({true, false}),
                                             s[3], at::Tensor()));
    }
    return {grad_scores, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// As ListwiseKDFunction below: pld_loss_and_grads when an input requires grad.
class PLDFunction : public torch::autograd::Function<PLDFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student,
                               const at::Tensor& teacher, const at::Tensor& target,
                               double temperature, c10::string_view reduction) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, double, c10::string_view)>(
        "pld_loss");
    static auto with_grads = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, double, c10::string_view, bool)>(
        "pld_loss_and_grads");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // no zero-filled gradient for the int64 ranking
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = c10::List<bool>({student.requires_grad(), teacher.requires_grad()});
    if (!student.requires_grad() && !teacher.requires_grad()) {
      auto [loss, ranking] = op.call(student, teacher, target, temperature, reduction);
      ctx->mark_non_differentiable({ranking});
      return {loss, ranking};
    }
    auto [loss, ranking, grad_student, grad_teacher] =
        with_grads.call(student, teacher, target, temperature, reduction, teacher.requires_grad());
    ctx->mark_non_differentiable({ranking});
    ctx->save_for_backward({student, teacher, ranking, grad_student, grad_teacher});
    return {loss, ranking};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
        c10::string_view, bool)>("pld_loss_backward");
    if (!grads[0].defined()) return variable_list(5);  // only the ranking was used downstream
    const auto s = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    at::Tensor grad_student, grad_teacher;
    if (torch::autograd::GradMode::is_enabled()) {  // recorded: the op that refuses double backward
      std::tie(grad_student, grad_teacher) =
          op.call(grads[0], s[0], s[1], s[2], ctx->saved_data["temperature"].toDouble(), reduction,
                  needs[1]);
    } else {
      std::tie(grad_student, grad_teacher) = scaled_grads(grads[0], reduction, needs, s[3], s[4]);
    }
    return {if_needed(needs[0], grad_student), if_needed(needs[1], grad_teacher), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// When an input requires grad, the forward runs listwise_kd_loss_and_grads: the loss and its
// gradients for an upstream gradient of 1, from the same softmaxes, and the backward scales them
// by the upstream gradient (per row for reduction "none"). A backward that is itself recorded
// (create_graph=True) calls listwise_kd_loss_backward instead, which refuses double backward.
class ListwiseKDFunction : public torch::autograd::Function<ListwiseKDFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student,
                               const at::Tensor& teacher, const OptTensor& lengths,
                               double student_temperature, double teacher_temperature,
                               c10::string_view reduction) {
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                        double, double, c10::string_view)>("listwise_kd_loss");
    static auto with_grads = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const OptTensor&, double, double, c10::string_view,
        bool)>("listwise_kd_loss_and_grads");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["student_temperature"] = student_temperature;
    ctx->saved_data["teacher_temperature"] = teacher_temperature;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = c10::List<bool>({student.requires_grad(), teacher.requires_grad()});
    if (!student.requires_grad() && !teacher.requires_grad()) {
      return {op.call(student, teacher, lengths, student_temperature, teacher_temperature, reduction)};
    }
    auto [loss, grad_student, grad_teacher] =
        with_grads.call(student, teacher, lengths, student_temperature, teacher_temperature,
                        reduction, teacher.requires_grad());
    ctx->save_for_backward(
        {student, teacher, lengths.value_or(at::Tensor()), grad_student, grad_teacher});
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, double, double,
        c10::string_view, bool)>("listwise_kd_loss_backward");
    const auto s = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    at::Tensor grad_student, grad_teacher;
    if (torch::autograd::GradMode::is_enabled()) {  // recorded: the op that refuses double backward
      std::tie(grad_student, grad_teacher) =
          op.call(grads[0], s[0], s[1], optional_of(s[2]),
                  ctx->saved_data["student_temperature"].toDouble(),
                  ctx->saved_data["teacher_temperature"].toDouble(), reduction, needs[1]);
    } else {
      std::tie(grad_student, grad_teacher) = scaled_grads(grads[0], reduction, needs, s[3], s[4]);
    }
    return {if_needed(needs[0], grad_student), if_needed(needs[1], grad_teacher), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
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

std::tuple<at::Tensor, at::Tensor> pld_loss_autograd(const at::Tensor& student,
                                                     const at::Tensor& teacher,
                                                     const at::Tensor& target, double temperature,
                                                     c10::string_view reduction) {
  auto out = PLDFunction::apply(student, teacher, target, temperature, reduction);
  return {out[0], out[1]};
}

at::Tensor listwise_kd_loss_autograd(const at::Tensor& student, const at::Tensor& teacher,
                                     const OptTensor& lengths, double student_temperature,
                                     double teacher_temperature, c10::string_view reduction) {
  return ListwiseKDFunction::apply(student, teacher, lengths, student_temperature,
                                   teacher_temperature, reduction)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, Autograd, m) {
  m.impl("plackett_luce_loss", &plackett_luce_loss_autograd);
  m.impl("plackett_luce_loss_backward", no_double_backward_kernel());
  m.impl("listmle", &listmle_autograd);
  m.impl("listmle_and_grads", no_double_backward_kernel());
  m.impl("pld_loss", &pld_loss_autograd);
  m.impl("pld_loss_backward", no_double_backward_kernel());
  m.impl("pld_loss_and_grads", no_double_backward_kernel());
  m.impl("listwise_kd_loss", &listwise_kd_loss_autograd);
  m.impl("listwise_kd_loss_backward", no_double_backward_kernel());
  m.impl("listwise_kd_loss_and_grads", no_double_backward_kernel());
}

}  // namespace kdops::autograd
