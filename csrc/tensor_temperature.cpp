// The CPU kernels of the tensor_temperature overloads of pld_loss and listwise_kd_loss
// (csrc/kdops.cpp): each temperature's value, read on the host (a CPU tensor's: no sync), into the
// float op, which checks it (positive and finite, by name) and keeps the temperature rule of
// common/plackett_luce.h; *_and_grads adds the temperatures' gradients at an upstream gradient of
// 1, formed from the float op's gradients (autograd/temperature.h). The CUDA kernels take the
// temperature in device memory instead (csrc/cuda/plackett_luce_cuda.cpp).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <tuple>

#include "autograd/temperature.h"
#include "common/find_op.h"
#include "common/plackett_luce_inputs.h"

namespace kdops {
namespace {

using OptTensor = c10::optional<at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensor5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using autograd::centred_row_dots;
using autograd::per_reduction;

// The value of a temperature tensor (checked by common/plackett_luce_inputs.h), read on the host.
double temperature_value(const at::Tensor& t, const at::Tensor& scores, const char* name) {
  check_temperature_tensor(t, scores, name);
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

// The float op's outputs with the teacher's gradient (which dL/dT is formed from), returned only
// when asked for ([0, C] otherwise, as the float op's), and dL/dT = -(1/T) sum t dL/dt.
Tensor5 pld_loss_and_grads_tt(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& target,
                              const at::Tensor& temperature, c10::string_view reduction, bool teacher_grad) {
  static auto op = find_op<Tensor4(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, c10::string_view,
                                   bool)>("pld_loss_and_grads");
  const double t = temperature_value(temperature, student, "temperature");
  auto [loss, ranking, grad_student, grad_teacher] = op.call(student, teacher, target, t, reduction, true);
  const at::Tensor grad_t = per_reduction(centred_row_dots(teacher, grad_teacher), reduction == "none").neg().div(t);
  if (!teacher_grad) grad_teacher = grad_teacher.new_empty({0, grad_teacher.size(1)});
  return {loss, ranking, grad_student, grad_teacher, grad_t};
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

// As pld_loss_and_grads_tt: dL/dTs = (2 L - sum s dL/ds) / Ts and dL/dTt = -(1/Tt) sum t dL/dt.
Tensor5 listwise_kd_loss_and_grads_tt(const at::Tensor& student, const at::Tensor& teacher, const OptTensor& lengths,
                                      const at::Tensor& ts, const at::Tensor& tt, c10::string_view reduction,
                                      bool teacher_grad) {
  static auto op = find_op<Tensor3(const at::Tensor&, const at::Tensor&, const OptTensor&, double, double,
                                   c10::string_view, bool)>("listwise_kd_loss_and_grads");
  const double student_t = temperature_value(ts, student, "student_temperature");
  const double teacher_t = temperature_value(tt, student, "teacher_temperature");
  auto [loss, grad_student, grad_teacher] = op.call(student, teacher, lengths, student_t, teacher_t, reduction, true);
  const bool none = reduction == "none";
  const at::Tensor student_dot = per_reduction(centred_row_dots(student, grad_student), none);
  const at::Tensor grad_ts = (loss.to(student_dot.scalar_type()).mul(2) - student_dot).div(student_t);
  const at::Tensor grad_tt = per_reduction(centred_row_dots(teacher, grad_teacher), none).neg().div(teacher_t);
  if (!teacher_grad) grad_teacher = grad_teacher.new_empty({0, grad_teacher.size(1)});
  return {loss, grad_student, grad_teacher, grad_ts, grad_tt};
}

}  // namespace

TORCH_LIBRARY_IMPL(KDOPS_NS, CPU, m) {
  m.impl("pld_loss.tensor_temperature", &pld_loss_tt);
  m.impl("pld_loss_backward.tensor_temperature", &pld_loss_backward_tt);
  m.impl("pld_loss_and_grads.tensor_temperature", &pld_loss_and_grads_tt);
  m.impl("listwise_kd_loss.tensor_temperature", &listwise_kd_loss_tt);
  m.impl("listwise_kd_loss_backward.tensor_temperature", &listwise_kd_loss_backward_tt);
  m.impl("listwise_kd_loss_and_grads.tensor_temperature", &listwise_kd_loss_and_grads_tt);
}

}  // namespace kdops
