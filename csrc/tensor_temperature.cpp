// The kernels of the tensor_temperature overloads of pld_loss and listwise_kd_loss (csrc/kdops.cpp),
// one for every backend: each temperature's value, read on the host, into the float op. The
// kernels take a temperature as a launch argument, so the read costs nothing for a CPU tensor and
// one device sync for a temperature on the GPU. The float op checks the value (positive and
// finite, by name) and keeps the temperature rule of common/plackett_luce.h; the temperatures'
// gradients come from the Autograd kernels (csrc/autograd/plackett_luce_autograd.cpp).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <tuple>

#include "common/find_op.h"

namespace kdops {
namespace {

using OptTensor = c10::optional<at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// One temperature for every row: a 0-dim floating tensor on the CPU or on the scores' device
// (per-row temperatures would need the kernels to take them; they do not).
double temperature_value(const at::Tensor& t, const at::Tensor& scores, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 0, name, " must be a float or a 0-dim tensor (one temperature for every row), got shape ",
                    t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.is_cpu() || t.device() == scores.device(), name,
                    " must be on the CPU or on the device of the scores (", scores.device(), "), got ", t.device());
  return t.item<double>();
}

std::tuple<at::Tensor, at::Tensor> pld_loss_tt(const at::Tensor& student, const at::Tensor& teacher,
                                               const at::Tensor& target, const at::Tensor& temperature,
                                               c10::string_view reduction) {
  static auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, c10::string_view)>(
      "pld_loss");
  return op.call(student, teacher, target, temperature_value(temperature, student, "temperature"), reduction);
}

Tensor2 pld_loss_backward_tt(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
                             const at::Tensor& ranking, const at::Tensor& temperature, c10::string_view reduction,
                             bool teacher_grad) {
  static auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                   c10::string_view, bool)>("pld_loss_backward");
  return op.call(grad, student, teacher, ranking, temperature_value(temperature, student, "temperature"), reduction,
                 teacher_grad);
}

Tensor4 pld_loss_and_grads_tt(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
                              const at::Tensor& temperature, c10::string_view reduction, bool teacher_grad) {
  static auto op = find_op<Tensor4(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, c10::string_view,
                                   bool)>("pld_loss_and_grads");
  return op.call(student, teacher, target, temperature_value(temperature, student, "temperature"), reduction,
                 teacher_grad);
}

at::Tensor listwise_kd_loss_tt(const at::Tensor& student, const at::Tensor& teacher, const OptTensor& lengths,
                               const at::Tensor& ts, const at::Tensor& tt, c10::string_view reduction) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, double,
                                      c10::string_view)>("listwise_kd_loss");
  return op.call(student, teacher, lengths, temperature_value(ts, student, "student_temperature"),
                 temperature_value(tt, student, "teacher_temperature"), reduction);
}

Tensor2 listwise_kd_loss_backward_tt(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher,
                                     const OptTensor& lengths, const at::Tensor& ts, const at::Tensor& tt,
                                     c10::string_view reduction, bool teacher_grad) {
  static auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, double,
                                   double, c10::string_view, bool)>("listwise_kd_loss_backward");
  return op.call(grad, student, teacher, lengths, temperature_value(ts, student, "student_temperature"),
                 temperature_value(tt, student, "teacher_temperature"), reduction, teacher_grad);
}

Tensor3 listwise_kd_loss_and_grads_tt(const at::Tensor& student, const at::Tensor& teacher, const OptTensor& lengths,
                                      const at::Tensor& ts, const at::Tensor& tt, c10::string_view reduction,
                                      bool teacher_grad) {
  static auto op = find_op<Tensor3(const at::Tensor&, const at::Tensor&, const OptTensor&, double, double,
                                   c10::string_view, bool)>("listwise_kd_loss_and_grads");
  return op.call(student, teacher, lengths, temperature_value(ts, student, "student_temperature"),
                 temperature_value(tt, student, "teacher_temperature"), reduction, teacher_grad);
}

void register_kernels(torch::Library& m) {
  m.impl("pld_loss.tensor_temperature", &pld_loss_tt);
  m.impl("pld_loss_backward.tensor_temperature", &pld_loss_backward_tt);
  m.impl("pld_loss_and_grads.tensor_temperature", &pld_loss_and_grads_tt);
  m.impl("listwise_kd_loss.tensor_temperature", &listwise_kd_loss_tt);
  m.impl("listwise_kd_loss_backward.tensor_temperature", &listwise_kd_loss_backward_tt);
  m.impl("listwise_kd_loss_and_grads.tensor_temperature", &listwise_kd_loss_and_grads_tt);
}

}  // namespace

// Per backend (not CompositeExplicitAutograd), so that kdops.build_info() lists exactly the
// backends whose float op has kernels: the CPU's and, in a CUDA build, CUDA's (kdops_sim: its CPU
// key runs the simulated CUDA kernels).
TORCH_LIBRARY_IMPL(KDOPS_NS, CPU, m) { register_kernels(m); }
#ifdef KDOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(KDOPS_NS, CUDA, m) { register_kernels(m); }
#endif

}  // namespace kdops
