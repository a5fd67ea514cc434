// Host-side argument checks shared by every op's CPU and CUDA entry points. Each check names
// the argument, so torch.ops.kdops.* called directly fails as clearly as the Python API.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/_assert_async.h>
#include <c10/util/Exception.h>

#include <string>

namespace kdops {

// The score dtypes every op computes in. Not at::isFloatingType, which also holds for the
// float8 types: those passed it and failed later in the kernel dispatch, naming no argument.
inline void check_floating(const at::Tensor& t, const char* name) {
  const at::ScalarType s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, name,
                   " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ", s);
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* shape) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", shape, ", got a tensor of shape ", t.sizes());
}

inline void check_same_shape(const at::Tensor& t, const at::Tensor& ref, const char* name,
                             const char* ref_name) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), name, " must have the shape of ", ref_name, " ",
                    ref.sizes(), ", got ", t.sizes());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* name,
                             const char* ref_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name,
                   " (", ref.scalar_type(), "), got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name,
                              const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on the device of ", ref_name, " (",
                    ref.device(), "), got ", t.device());
}

// Whether an op's tensors live in device memory: CUDA tensors, and in the simulated build
// (kdops._C_sim) every tensor, since there CPU tensors stand for device memory. A check that
// reads values must not read them back to the host there (a device sync, and no CUDA-graph
// capture): it asserts on the device instead (assert_on_device).
inline bool is_device_memory(const at::Tensor& t) {
#ifdef KDOPS_SIM
  (void)t;
  return true;
#else
  return t.is_cuda();
#endif
}

// A check of values that live in device memory: `valid` (a bool scalar computed on the device)
// must be true, else the op fails with `message` at the next sync (at::_assert_async, as torch's
// own CUDA index checks; on the simulator's CPU tensors it raises at once). Returns false, doing
// nothing, for host tensors: the caller checks those by reading them.
inline bool assert_on_device(const at::Tensor& valid, const std::string& message) {
  if (!is_device_memory(valid)) return false;
  at::_assert_async(valid, message);
  return true;
}

// Masks are bool, or numbers holding exactly 0 and 1 that are converted (True = real token /
// item). Any other value (2, 0.5, -1, NaN) is refused rather than read as True: a mask built
// from scores or counts by mistake would otherwise pass. The value check reads the mask where
// it lives; in device memory that would be a device sync, so there it is a device-side assert
// instead (assert_on_device), and a bool mask skips it.
inline at::Tensor as_bool_mask(const at::Tensor& mask, const char* name) {
  TORCH_CHECK_TYPE(!at::isComplexType(mask.scalar_type()), name, " must be bool or real, got ",
                   mask.scalar_type());
  if (mask.scalar_type() == at::kBool) return mask.contiguous();
  const at::Tensor valid = mask.eq(0).logical_or_(mask.eq(1)).all();
  const std::string message = std::string(name) + " must hold only 0 and 1 (or be bool)";
  if (!assert_on_device(valid, message)) {
    TORCH_CHECK_VALUE(valid.item<bool>(), message, ", got other values");
  }
  return mask.ne(0).contiguous();
}

}  // namespace kdops
