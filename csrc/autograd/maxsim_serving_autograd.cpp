// Autograd of the serving MaxSim ops (maxsim_quantized, maxsim_residual): none. They are for
// inference (quantized and compressed docs have no gradient to give); a call that would record a
// backward is refused with a clear error instead of returning scores whose gradient is silently
// missing. A boxed kernel: one function for both signatures.
#include "autograd/autograd_common.h"

namespace kdops::autograd {
namespace {

void forward_only(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  if (torch::autograd::GradMode::is_enabled()) {
    for (size_t i = 0; i < n_args; ++i) {
      const c10::IValue& value = (*stack)[stack->size() - n_args + i];
      TORCH_CHECK(!(value.isTensor() && value.toTensor().defined() && value.toTensor().requires_grad()),
                  schema.name(), " is forward only (inference): it has no gradient, and its argument ",
                  schema.arguments()[i].name(), " requires grad. Call it under torch.no_grad() or "
                  "torch.inference_mode(), or pass detached tensors.");
    }
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, Autograd, m) {
  m.impl("maxsim_quantized", torch::CppFunction::makeFromBoxedFunction<&forward_only>());
  m.impl("maxsim_residual", torch::CppFunction::makeFromBoxedFunction<&forward_only>());
}

}  // namespace kdops::autograd
