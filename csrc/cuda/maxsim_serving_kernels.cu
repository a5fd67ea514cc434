// The serving MaxSim kernel's launcher: maxsim_serving_mma.cuh, Int8Operands for int8 x int8,
// HalfOperands for every other pairing and residual docs; the work split is the float tensor-core forward's
// (maxsim_groups.cuh).
#include <c10/util/Exception.h>

#include <algorithm>
#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/maxsim_groups.cuh"
#include "cuda/maxsim_serving_kernels.h"
#include "cuda/maxsim_serving_mma.cuh"
#include "cuda/smem_limit.h"

namespace kdops::cuda::maxsim_serving {
namespace {

template <typename Op, bool kWriteArgmax>
void launch_forward(const MaxSimView<char>& v, tensor_core::serving::Side q, tensor_core::serving::Side d,
                    const ResidualDocs& residual, float* scores, int32_t* argmax, const HalfRangeFlag& range,
                    LaunchTarget on) {
  namespace tc = tensor_core;
  namespace sv = tensor_core::serving;
  constexpr auto kernel = sv::maxsim_serving_kernel<Op, kWriteArgmax>;
  // Tokens copied as they are (int8 x int8, 16-byte aligned rows) stream through the kStages-deep
  // cp.async pipeline when all of d (rounded up to the mma's k) fits with kStages doc tiles. Else
  // one doc tile: all of d in one chunk when it fits, else the widest chunk that does (a 48 KiB
  // limit holds 352 int8 or 176 fp16 features a chunk).
  const int64_t limit = dynamic_shared_memory_limit<kernel>();
  const bool vec = tc::vector_loads<int8_t>(v.dim, v.Q, v.D);  // used by Int8Operands only
  const int64_t all = tc::round_up(v.dim, Op::kK);
  const bool pipelined = std::is_same_v<Op, sv::Int8Operands> && vec && sv::smem_bytes<Op>(all, sv::kStages) <= limit;
  const int stages = pipelined ? sv::kStages : 1;
  const int64_t row_bytes = limit / (tc::kRows + sv::kCols) - sv::kVec;
  const int64_t fits = row_bytes / sv::kStep * sv::kStep / int64_t(sizeof(typename Op::stored));
  const int64_t width = std::min<int64_t>(all, fits);
  TORCH_CHECK(width >= Op::kK, "kdops.maxsim_quantized: the device's shared memory (", limit,
              " bytes) holds no tile");
  const tc::Groups groups = tc::groups_for(v.Nq, v.Lq, v.layout);
  launch(kernel, static_cast<int>(serving_blocks(v)), sv::kThreads, sv::smem_bytes<Op>(width, stages), on.stream, v,
         q, d, residual, groups, static_cast<int>(width), stages, vec, scores, argmax, range.grid_words,
         range.in_range);
}

}  // namespace

int64_t serving_blocks(const MaxSimView<char>& v) {
  return std::min<int64_t>(tensor_core::groups_for(v.Nq, v.Lq, v.layout).items, int64_t(1) << 30);
}

template <bool kWriteArgmax>
void serving_forward(const MaxSimView<char>& v, Format q_format, const float* q_scale, Format d_format,
                     const float* d_scale, const ResidualDocs& residual, float* scores, int32_t* argmax,
                     const HalfRangeFlag& range, LaunchTarget on) {
  namespace sv = tensor_core::serving;
  const sv::Side q{q_format, q_scale}, d{d_format, d_scale};
  if (q_format == Format::kInt8 && d_format == Format::kInt8) {
    launch_forward<sv::Int8Operands, kWriteArgmax>(v, q, d, residual, scores, argmax, range, on);
  } else {
    launch_forward<sv::HalfOperands, kWriteArgmax>(v, q, d, residual, scores, argmax, range, on);
  }
}

template void serving_forward<true>(const MaxSimView<char>&, Format, const float*, Format, const float*,
                                    const ResidualDocs&, float*, int32_t*, const HalfRangeFlag&, LaunchTarget);
template void serving_forward<false>(const MaxSimView<char>&, Format, const float*, Format, const float*,
                                     const ResidualDocs&, float*, int32_t*, const HalfRangeFlag&, LaunchTarget);

}  // namespace kdops::cuda::maxsim_serving
