// The scratch of a kernel that reduces over its whole grid in its own launch (grid_sum.cuh,
// grid_none.cuh), for the ops' host code: the blocks' partials (uninitialised: each block writes
// its own before it is counted) and the arrival counter, which must be zero when the kernel
// starts. No launch zeroes it: the counter is one per (device, stream), allocated zeroed the
// first time a stream needs one and kept, and the grid's last block puts it back to zero
// (atomicInc wraps at the grid size). Launches on one stream run in order, so two kernels never
// hold it at once.
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

// The zero words of `device`'s current stream (see above): [0] the arrival counter, [1] grid_none's
// count of blocks that found something (grid_sum leaves it alone).
inline at::Tensor stream_grid_counter(const at::TensorOptions& device) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, uintptr_t>, at::Tensor> counters;  // never freed: two words per stream
  const std::pair<int64_t, uintptr_t> key{device.device().index(), reinterpret_cast<uintptr_t>(current_stream())};
  const std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& counter = counters[key];
  if (!counter.defined()) counter = at::zeros({2}, device.dtype(at::kInt));
  return counter;
}

// The stream's zero words for a grid of `blocks` blocks (none for one block: nullptr, its block
// is the last). When the launch fails on the host (the simulator raises in the middle of a grid),
// the destructor zeroes them, which a part of the grid may have counted on; a kernel that faults
// on a GPU ends the CUDA context, words and all.
class GridWords {
 public:
  GridWords(int64_t blocks, const at::TensorOptions& device) : exceptions_(std::uncaught_exceptions()) {
    if (blocks > 1) words_ = stream_grid_counter(device);
  }
  GridWords(const GridWords&) = delete;
  GridWords& operator=(const GridWords&) = delete;
  ~GridWords() {
    if (words_.defined() && std::uncaught_exceptions() > exceptions_) words_.zero_();
  }

  unsigned int* words() const { return words_.defined() ? reinterpret_cast<unsigned int*>(words_.data_ptr<int>()) : nullptr; }

 private:
  int exceptions_;
  at::Tensor words_;
};

// A grid sum's scratch for `blocks` blocks of `sums` sums each (grid_sums); a grid of one block
// needs none (nullptrs: grid_sums returns that block's totals).
template <typename acc_t>
class GridScratch {
 public:
  GridScratch(int64_t blocks, int sums, const at::TensorOptions& device) : counter_(blocks, device) {
    if (blocks <= 1) return;
    partial_sum_ = at::empty({sums, blocks}, device.dtype(c10::CppTypeToScalarType<acc_t>::value));
    partial_count_ = at::empty({blocks}, device.dtype(at::kLong));
  }

  acc_t* partial_sum() const { return partial_sum_.defined() ? partial_sum_.data_ptr<acc_t>() : nullptr; }
  long long* partial_count() const {
    return partial_count_.defined() ? reinterpret_cast<long long*>(partial_count_.data_ptr<int64_t>()) : nullptr;
  }
  unsigned int* done() const { return counter_.words(); }

 private:
  GridWords counter_;
  at::Tensor partial_sum_, partial_count_;
};

}  // namespace kdops::cuda
