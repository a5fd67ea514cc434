// The host part the CUDA serving ops share (maxsim_quantized_cuda.cpp, maxsim_residual_cuda.cpp):
// the outputs, the one launch of the serving kernel (maxsim_serving_kernels.h), the fp16 range
// check of a float32 query, and length_normalize.
#pragma once

#include <ATen/ops/_assert_async.h>
#include <ATen/ops/empty.h>

#include <tuple>

#include "common/maxsim_serving_inputs.h"
#include "cuda/device.h"
#include "cuda/grid_scratch.h"
#include "cuda/maxsim_serving_kernels.h"

namespace kdops::cuda {

// What the kernel reads besides ServingArgs: the docs' token rows (nullptr for residual docs),
// each side's format and scales (nullptr: unscaled), and residual docs.
struct ServingOperands {
  const void* docs;
  maxsim_serving::Format q_format;
  const float* q_scale;
  maxsim_serving::Format d_format;
  const float* d_scale;
  maxsim_serving::ResidualDocs residual;
};

// scores [Nq, K] float32 and argmax (serving_argmax). A float32 query is rounded to fp16 for the
// tensor cores, where a finite value past 65504 would become an infinity: the kernel flags such a
// value as it stages the tokens, and the flag is asserted on the device (no host read, no pass of
// its own over Q; the simulator raises at once). Q is only read, and so only checked, when there
// is a score to compute from it (K >= 1, a doc token).
inline std::tuple<at::Tensor, at::Tensor> serving_op(const ServingArgs& a, const ServingOperands& in,
                                                     bool length_normalize, bool with_argmax) {
  using maxsim_serving::Format;
  const DeviceGuard guard(a.Q.device());
  at::Tensor scores = at::empty({a.Nq, a.layout.K}, a.Q.options().dtype(at::kFloat));
  at::Tensor argmax = serving_argmax(a, with_argmax);
  if (scores.numel() == 0) return {scores, argmax};
  const MaxSimView<char> v = a.view(in.docs);
  const bool float_query = in.q_format == Format::kFloat;  // the docs are never float32
  const at::Tensor in_range = float_query ? at::empty({}, a.Q.options().dtype(at::kBool)) : at::Tensor();
  {
    // The stream's words, zeroed by the guard only if the launch itself fails; the kernel's last
    // block leaves them at zero, before the flag is asserted below.
    const GridWords words(float_query ? maxsim_serving::serving_blocks(v) : 0, a.Q.options());
    const maxsim_serving::HalfRangeFlag range{words.words(), float_query ? in_range.data_ptr<bool>() : nullptr};
    if (with_argmax) {
      maxsim_serving::serving_forward<true>(v, in.q_format, in.q_scale, in.d_format, in.d_scale, in.residual,
                                            scores.data_ptr<float>(), argmax.data_ptr<int32_t>(), range,
                                            launch_target());
    } else {
      maxsim_serving::serving_forward<false>(v, in.q_format, in.q_scale, in.d_format, in.d_scale, in.residual,
                                             scores.data_ptr<float>(), nullptr, range, launch_target());
    }
  }
  if (float_query) {
    at::_assert_async(in_range, "Q (float32) must hold values within fp16's range |x| <= 65504 on CUDA, where it "
                                "is rounded to fp16 for the tensor cores");
  }
  if (length_normalize) scores.div_(serving_query_lengths(a));
  return {scores, argmax};
}

}  // namespace kdops::cuda
