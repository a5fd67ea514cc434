// What every op family's Autograd kernel shares (the torchvision csrc/ops/autograd pattern): a
// forward that calls the op below autograd, a backward that calls the `<op>_backward` op, both
// found by find_op (common/find_op.h).
#pragma once

#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "common/find_op.h"

namespace kdops::autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using OptTensor = c10::optional<at::Tensor>;

// An optional tensor argument saved for backward (saved as an undefined tensor when absent).
inline OptTensor optional_of(const at::Tensor& saved) {
  return saved.defined() ? OptTensor(saved) : c10::nullopt;
}

// A gradient for an input that needs one, an undefined tensor otherwise.
inline at::Tensor if_needed(bool needed, const at::Tensor& grad) {
  return needed ? grad : at::Tensor();
}

// The Autograd kernel of every `<op>_backward` op (and of the ops that return gradients): runs the kernel, and when the call is itself
// recorded (create_graph=True), gives its outputs a graph node that refuses to differentiate
// them with a clear error, as torchvision's backward ops do. A boxed kernel, so one function
// serves every signature.
inline void no_double_backward(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                               torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  std::vector<at::Tensor> inputs;
  bool recorded = false;
  if (torch::autograd::GradMode::is_enabled()) {
    for (size_t i = stack->size() - n_args; i < stack->size(); ++i) {
      const c10::IValue& value = (*stack)[i];
      if (value.isTensor() && value.toTensor().defined()) {
        inputs.push_back(value.toTensor());
        recorded |= inputs.back().requires_grad();
      }
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  if (!recorded) return;
  const bool backward_op = c10::string_view(schema.name()).ends_with("_backward");
  auto node = c10::make_intrusive<torch::autograd::Error>(
      schema.name() + (backward_op ? " is a backward op" : " returns gradients") +
          ": double backward is not supported",
      torch::autograd::collect_next_edges(inputs));
  const size_t n_returns = schema.returns().size();
  for (size_t i = stack->size() - n_returns; i < stack->size(); ++i) {
    const at::Tensor& out = (*stack)[i].toTensor();
    if (out.defined() && torch::autograd::isDifferentiableType(out.scalar_type())) {
      torch::autograd::set_history(out, node);
    }
  }
}

inline torch::CppFunction no_double_backward_kernel() {
  return torch::CppFunction::makeFromBoxedFunction<&no_double_backward>();
}

// Calls a `<op>_backward` op from a backward. A backward that is itself recorded
// (create_graph=True) goes through the op's Autograd kernel above, whose node refuses double
// backward; any other skips it: that boxed kernel would copy every argument onto a stack and
// back for nothing (callgrind: ~1,500 of the ~195,000 instructions of a Margin-MSE fwd+bwd at
// B=64, a small but free saving).
template <typename Op, typename... Args>
auto call_backward_op(const Op& op, Args&&... args) {
  if (torch::autograd::GradMode::is_enabled()) return op.call(std::forward<Args>(args)...);
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

}  // namespace kdops::autograd
