// Autograd of the Margin-MSE ops: d loss / d student from margin_mse(_pairwise)_backward; the
// teacher's gradient is its negative (the loss depends on student - teacher only).
#include "autograd/autograd_common.h"

namespace kdops::autograd {
namespace {

class MarginMSEFunction : public torch::autograd::Function<MarginMSEFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student,
                               const at::Tensor& teacher, const c10::optional<at::Tensor>& mask,
                               c10::string_view reduction) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, c10::string_view)>(
        "margin_mse");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, count] = op.call(student, teacher, mask, reduction);
    ctx->mark_non_differentiable({count});
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = c10::List<bool>({student.requires_grad(), teacher.requires_grad()});
    if (student.requires_grad() || teacher.requires_grad()) {
      ctx->save_for_backward({student, teacher, mask.value_or(at::Tensor()), count});
    }
    return {loss, count};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const c10::optional<at::Tensor>&, const at::Tensor&,
                                        c10::string_view)>("margin_mse_backward");
    const auto saved = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    const c10::optional<at::Tensor> mask =
        saved[2].defined() ? c10::optional<at::Tensor>(saved[2]) : c10::nullopt;
    const at::Tensor grad_student = call_backward_op(
        op, grads[0], saved[0], saved[1], mask, saved[3], ctx->saved_data["reduction"].toStringRef());
    return {if_needed(needs[0], grad_student), needs[1] ? -grad_student : at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

class MarginMSEPairwiseFunction : public torch::autograd::Function<MarginMSEPairwiseFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student_pos,
                               const at::Tensor& student_neg, const at::Tensor& teacher_pos,
                               const at::Tensor& teacher_neg, c10::string_view reduction) {
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, c10::string_view)>(
        "margin_mse_pairwise");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor loss = op.call(student_pos, student_neg, teacher_pos, teacher_neg, reduction);
    const c10::List<bool> needs({student_pos.requires_grad(), student_neg.requires_grad(),
                                 teacher_pos.requires_grad(), teacher_neg.requires_grad()});
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["grads"] = needs;
    if (needs[0] || needs[1] || needs[2] || needs[3]) {
      ctx->save_for_backward({student_pos, student_neg, teacher_pos, teacher_neg});
    }
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
        const at::Tensor&, c10::string_view)>("margin_mse_pairwise_backward");
    const auto s = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    auto [grad_pos, grad_neg] = call_backward_op(op, grads[0], s[0], s[1], s[2], s[3],
                                                 ctx->saved_data["reduction"].toStringRef());
    return {if_needed(needs[0], grad_pos), if_needed(needs[1], grad_neg),
            needs[2] ? -grad_pos : at::Tensor(), needs[3] ? -grad_neg : at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> margin_mse_autograd(const at::Tensor& student,
                                                       const at::Tensor& teacher,
                                                       const c10::optional<at::Tensor>& mask,
                                                       c10::string_view reduction) {
  auto out = MarginMSEFunction::apply(student, teacher, mask, reduction);
  return {out[0], out[1]};
}

at::Tensor margin_mse_pairwise_autograd(const at::Tensor& student_pos,
                                        const at::Tensor& student_neg,
                                        const at::Tensor& teacher_pos,
                                        const at::Tensor& teacher_neg, c10::string_view reduction) {
  return MarginMSEPairwiseFunction::apply(student_pos, student_neg, teacher_pos, teacher_neg,
                                          reduction)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, Autograd, m) {
  m.impl("margin_mse", &margin_mse_autograd);
  m.impl("margin_mse_backward", no_double_backward_kernel());
  m.impl("margin_mse_pairwise", &margin_mse_pairwise_autograd);
  m.impl("margin_mse_pairwise_backward", no_double_backward_kernel());
}

}  // namespace kdops::autograd
