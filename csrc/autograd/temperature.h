// A temperature in an autograd kernel: a double (an op's float schema) or a 0-dim tensor (its
// tensor_temperature overload, csrc/kdops.cpp), which may require grad; and that gradient.
//
// A loss that depends on logits x only through x / T has dL/dT = -(1/T) sum_i x_i dL/dx_i (the
// chain rule through x_i / T); listwise KD's Ts^2 factor adds 2 L / Ts to the student
// temperature's (common/plackett_luce.h). The tensor_temperature *_and_grads ops return these at
// an upstream gradient of 1 (the CUDA kernels compute them with the scores' gradients, the CPU
// kernels from those gradients with the helpers below), and the backward scales them by the
// upstream gradient: one multiply, or a dot for reduction 'none'. A recorded backward
// (create_graph=True) forms them from the backward op's gradients instead.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/autograd.h>

#include <array>
#include <limits>
#include <type_traits>
#include <vector>

namespace kdops::autograd {

template <typename Temperature>
constexpr bool kTensorTemperature = std::is_same_v<Temperature, at::Tensor>;

// How an op takes a temperature: by value (double) or by reference (a tensor).
template <typename Temperature>
using TemperatureArg = std::conditional_t<kTensorTemperature<Temperature>, const at::Tensor&, double>;

// The overload of an op that takes Temperature ("" is the default: the float schema).
template <typename Temperature>
constexpr const char* temperature_overload() {
  return kTensorTemperature<Temperature> ? "tensor_temperature" : "";
}

inline bool requires_grad(double) { return false; }
inline bool requires_grad(const at::Tensor& t) { return t.requires_grad(); }

// Saves `tensors` for backward with the temperatures: doubles in saved_data, tensors after the
// others in the saved variables (so that one changed in place before backward is caught, as any
// saved input is).
template <size_t N>
void save_with_temperatures(torch::autograd::AutogradContext* ctx, std::vector<at::Tensor> tensors,
                            const std::array<double, N>& temperatures) {
  ctx->saved_data["temperatures"] = std::vector<double>(temperatures.begin(), temperatures.end());
  ctx->save_for_backward(tensors);
}

template <size_t N>
void save_with_temperatures(torch::autograd::AutogradContext* ctx, std::vector<at::Tensor> tensors,
                            const std::array<at::Tensor, N>& temperatures) {
  tensors.insert(tensors.end(), temperatures.begin(), temperatures.end());
  ctx->save_for_backward(tensors);
}

// The temperatures save_with_temperatures saved; `saved` is ctx->get_saved_variables().
template <typename Temperature, size_t N>
std::array<Temperature, N> saved_temperatures(torch::autograd::AutogradContext* ctx,
                                              const torch::autograd::variable_list& saved) {
  std::array<Temperature, N> out;
  if constexpr (kTensorTemperature<Temperature>) {
    for (size_t i = 0; i < N; ++i) out[i] = saved[saved.size() - N + i];
  } else {
    const auto values = ctx->saved_data["temperatures"].toDoubleVector();
    for (size_t i = 0; i < N; ++i) out[i] = values[i];
  }
  return out;
}

// Per row b: sum over its items i of x_bi * g_bi, for a gradient g whose rows each sum to 0 (a
// softmax's, so the sum does not change when a row's x moves by a constant): each row's x is
// shifted by its max over the items of nonzero gradient first, which leaves only rounding to
// change (scores of 1e4 would otherwise leave O(1e4 g) products to cancel), and items of zero
// gradient take no part (padding, whose scores may be anything, or a -inf item of p = 0). [B], in
// the accumulation type of x (float for half inputs). The same sum as the CUDA kernels'
// temperature_dot_term (common/plackett_luce.h).
inline at::Tensor centred_row_dots(const at::Tensor& x, const at::Tensor& g) {
  const auto acc = at::toOpMathType(x.scalar_type());
  if (x.sym_numel() == 0) return at::zeros({x.size(0)}, x.options().dtype(acc));  // amax needs an item
  const at::Tensor xs = x.to(acc), gs = g.to(acc), counted = gs.ne(0);
  const at::Tensor shift = at::where(counted, xs, -std::numeric_limits<double>::infinity()).amax({1}, true);
  return at::where(counted, (xs - shift) * gs, 0).sum({1});
}

// The rows' values for reduction 'none', else their sum.
inline at::Tensor per_reduction(const at::Tensor& rows, bool none) { return none ? rows : rows.sum(); }

// numerator / T as the temperature's gradient: in its dtype, on its device.
inline at::Tensor temperature_grad_of(const at::Tensor& numerator, const at::Tensor& temperature) {
  return numerator.div(temperature).to(temperature.options());
}

// A temperature's gradient from its value at an upstream gradient of 1 (a *_and_grads output,
// [B] for 'none', else 0-dim), at the upstream gradient g (per row for 'none'): in the
// temperature's dtype, on its device.
inline at::Tensor scaled_temperature_grad(const at::Tensor& g, const at::Tensor& unit, bool none,
                                          const at::Tensor& temperature) {
  const at::Tensor gs = g.to(unit.scalar_type());
  return (none ? at::dot(gs, unit) : unit.mul(gs)).to(temperature.options());
}

// dL/dT for a loss that depends on logits x only through x / T, given dL/dx (for the upstream
// gradient): -(1/T) sum_i x_i dL/dx_i. The teacher temperature of listwise KD, PLD's temperature
// (a recorded backward).
inline at::Tensor logits_temperature_grad(const at::Tensor& x, const at::Tensor& grad_x,
                                          const at::Tensor& temperature) {
  return temperature_grad_of(centred_row_dots(x, grad_x).sum().neg(), temperature);
}

// Listwise KD's student temperature: L = Ts^2 KL(.. || softmax(s / Ts)), so
// dL/dTs = (2 L - sum_i s_i dL/ds_i) / Ts, L weighted by the upstream gradient g (a scalar, or
// one per row for reduction "none", as `loss`) (a recorded backward).
inline at::Tensor student_temperature_grad(const at::Tensor& g, const at::Tensor& loss, const at::Tensor& student,
                                           const at::Tensor& grad_student, const at::Tensor& ts) {
  const auto acc = at::toOpMathType(student.scalar_type());
  const at::Tensor weighted_loss = (g.to(acc) * loss.to(acc)).sum();
  return temperature_grad_of(weighted_loss.mul(2) - centred_row_dots(student, grad_student).sum(), ts);
}

}  // namespace kdops::autograd
