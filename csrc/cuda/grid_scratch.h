// The scratch of a kernel that reduces over its whole grid in its own launch (grid_sum.cuh), for
// the ops' host code: the blocks' partials (uninitialised: each block writes its own before it
// is counted) and the arrival counter, which must be zero when the kernel starts. No launch
// zeroes it: the counter is one per (device, stream), allocated zeroed the first time a stream
// needs one and kept, and grid_sum's last block puts it back to zero (atomicInc wraps at the
// grid size). Launches on one stream run in order, so two kernels never hold it at once.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <utility>

#include "cuda/device.h"

namespace kdops::cuda {

// The zero arrival counter of `device`'s current stream (see above).
inline at::Tensor stream_grid_counter(const at::TensorOptions& device) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, uintptr_t>, at::Tensor> counters;  // never freed: a word per stream
  const std::pair<int64_t, uintptr_t> key{device.device().index(), reinterpret_cast<uintptr_t>(current_stream())};
  const std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& counter = counters[key];
  if (!counter.defined()) counter = at::zeros({1}, device.dtype(at::kInt));
  return counter;
}

// A grid sum's scratch for `blocks` blocks of `sums` sums each (grid_sums); a grid of one block
// needs none (nullptrs: grid_sums returns that block's totals). When the launch fails on the host (the simulator raises in the
// middle of a grid), the destructor zeroes the counter, which a part of the grid may have
// counted on; a kernel that faults on a GPU ends the CUDA context, counter and all.
template <typename acc_t>
class GridScratch {
 public:
  GridScratch(int64_t blocks, int sums, const at::TensorOptions& device) : exceptions_(std::uncaught_exceptions()) {
    if (blocks <= 1) return;
    partial_sum_ = at::empty({sums, blocks}, device.dtype(c10::CppTypeToScalarType<acc_t>::value));
    partial_count_ = at::empty({blocks}, device.dtype(at::kLong));
    counter_ = stream_grid_counter(device);
  }
  GridScratch(const GridScratch&) = delete;
  GridScratch& operator=(const GridScratch&) = delete;
  ~GridScratch() {
    if (counter_.defined() && std::uncaught_exceptions() > exceptions_) counter_.zero_();
  }

  acc_t* partial_sum() const { return partial_sum_.defined() ? partial_sum_.data_ptr<acc_t>() : nullptr; }
  long long* partial_count() const {
    return partial_count_.defined() ? reinterpret_cast<long long*>(partial_count_.data_ptr<int64_t>()) : nullptr;
  }
  unsigned int* done() const {
    return counter_.defined() ? reinterpret_cast<unsigned int*>(counter_.data_ptr<int>()) : nullptr;
  }

 private:
  int exceptions_;
  at::Tensor partial_sum_, partial_count_, counter_;
};

}  // namespace kdops::cuda
