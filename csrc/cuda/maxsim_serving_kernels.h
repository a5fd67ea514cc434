// Launcher of the serving MaxSim kernel (maxsim_serving_kernels.cu), called by the ops in
// maxsim_quantized_cuda.cpp and maxsim_residual_cuda.cpp. Pointers are device memory.
#pragma once

#include <cstdint>

#include "common/maxsim.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::maxsim_serving {

// How a side's token elements are stored: int8, float8_e4m3fn bits, float32, or (docs only)
// ColBERT/PLAID residual codes (ResidualDocs).
enum class Format : int { kInt8, kE4m3, kFloat, kResidual };

// Residual-compressed docs (maxsim_residual's format, csrc/kdops.cpp): per doc token row a
// centroid id (codes) and d * nbits / 8 bytes of packed bucket indices (residuals); centroids
// [C, d], weights [2^nbits].
struct ResidualDocs {
  const int32_t* codes;
  const uint8_t* residuals;
  const float* centroids;
  const float* weights;
  int nbits;
};

KDOPS_HD int element_bytes(Format f) { return f == Format::kFloat ? 4 : 1; }

// The fp16 range check of float32 tokens, done by the kernel as it stages them: in_range (device
// bool, written by the kernel) = every float32 element read lies within fp16's range; grid_words:
// the stream's two zero words (grid_scratch.h GridWords; nullptr for a grid of one block). All
// nullptr: no check (no float32 side).
struct HalfRangeFlag {
  unsigned int* grid_words = nullptr;
  bool* in_range = nullptr;
};

// The grid of serving_forward for v (the stream words' GridWords needs it).
int64_t serving_blocks(const MaxSimView<char>& v);

// The serving ops' forward on tensor cores (maxsim_serving_mma.cuh): scores [Nq, K] float32
// (argmax [Nq, K, Lq] when kWriteArgmax). v.Q / v.D: rows of d elements in q_format / d_format
// (kResidual: v.D unused, the docs in `residual`); q_scale [Nq, Lq] and d_scale (one per doc token
// row) or nullptr (unscaled). int8 x int8: exact int32 sums; any other pairing: tokens decoded to
// fp16, fp32 sums. Any d: feature chunks when d is too wide for shared memory (checked: the
// device must hold one chunk). range: where the kernel flags float32 values past fp16's range.
template <bool kWriteArgmax>
void serving_forward(const MaxSimView<char>& v, Format q_format, const float* q_scale, Format d_format,
                     const float* d_scale, const ResidualDocs& residual, float* scores, int32_t* argmax,
                     const HalfRangeFlag& range, LaunchTarget on);

}  // namespace kdops::cuda::maxsim_serving
