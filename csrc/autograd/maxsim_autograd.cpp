// Autograd of MaxSim: gradients to Q and D through the saved argmax (maxsim_backward). The doc
// mask is not saved: it is encoded in argmax (-1 where no valid doc token won). The argmax is
// computed whenever the call records a backward, and returned only when the caller asked for it
// (with_argmax): inference without gradients writes none.
#include "autograd/autograd_common.h"

namespace kdops::autograd {
namespace {

class MaxSimFunction : public torch::autograd::Function<MaxSimFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& Q, const at::Tensor& D,
                               const OptTensor& q_mask, const OptTensor& d_mask,
                               const OptTensor& doc_offsets, bool length_normalize,
                               bool with_argmax, bool records) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
        const OptTensor&, bool, bool)>("maxsim");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [scores, argmax] =
        op.call(Q, D, q_mask, d_mask, doc_offsets, length_normalize, with_argmax || records);
    ctx->saved_data["length_normalize"] = length_normalize;
    ctx->saved_data["grads"] = c10::List<bool>({Q.requires_grad(), D.requires_grad()});
    if (records) {
      ctx->save_for_backward({Q, D, q_mask.value_or(at::Tensor()),
                              doc_offsets.value_or(at::Tensor()), argmax});
    }
    at::Tensor returned = with_argmax ? argmax : at::empty({0}, argmax.options());
    ctx->mark_non_differentiable({returned});
    return {scores, returned};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
        const OptTensor&, const OptTensor&, bool, bool, bool)>("maxsim_backward");
    const auto s = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    auto [grad_Q, grad_D] =
        call_backward_op(op, grads[0], s[4], s[0], s[1], optional_of(s[2]), optional_of(s[3]),
                         ctx->saved_data["length_normalize"].toBool(), needs[0], needs[1]);
    return {if_needed(needs[0], grad_Q), if_needed(needs[1], grad_D), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> maxsim_autograd(const at::Tensor& Q, const at::Tensor& D,
                                                   const OptTensor& q_mask,
                                                   const OptTensor& d_mask,
                                                   const OptTensor& doc_offsets,
                                                   bool length_normalize, bool with_argmax) {
  // Whether this call records a backward (Function::forward runs with grad mode off, so it is
  // decided here).
  const bool records =
      torch::autograd::GradMode::is_enabled() && (Q.requires_grad() || D.requires_grad());
  auto out = MaxSimFunction::apply(Q, D, q_mask, d_mask, doc_offsets, length_normalize,
                                   with_argmax, records);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, Autograd, m) {
  m.impl("maxsim", &maxsim_autograd);
  m.impl("maxsim_backward", no_double_backward_kernel());
}

}  // namespace kdops::autograd
