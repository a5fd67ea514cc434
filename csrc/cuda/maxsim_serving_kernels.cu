// The serving MaxSim kernels' launchers. int8 x int8: maxsim_int8_mma.cuh (mma.sync m16n8k32
// .s8); the work split is the float tensor-core forward's (maxsim_groups.cuh).
#include <c10/util/Exception.h>

#include <algorithm>

#include "cuda/launch.cuh"
#include "cuda/maxsim_groups.cuh"
#include "cuda/maxsim_int8_mma.cuh"
#include "cuda/maxsim_serving_kernels.h"
#include "cuda/smem_limit.h"

namespace kdops::cuda::maxsim_serving {

template <bool kWriteArgmax>
void int8_forward(const MaxSimView<int8_t>& v, const float* q_scale, const float* d_scale, float* scores,
                  int32_t* argmax, LaunchTarget on) {
  namespace tc = tensor_core;
  constexpr auto kernel = tc::int8::maxsim_int8_kernel<kWriteArgmax>;
  // All of d (rounded up to the mma's k) in one chunk when it fits, else the widest chunk that
  // does (a 48 KiB limit holds 352 features a chunk).
  const int64_t limit = dynamic_shared_memory_limit<kernel>();
  const int64_t fits = (limit / (tc::kRows + tc::int8::kCols) - tc::int8::kVec) / tc::int8::kK * tc::int8::kK;
  const int64_t width = std::min<int64_t>(tc::round_up(v.dim, tc::int8::kK), fits);
  TORCH_CHECK(width >= tc::int8::kK, "kdops.maxsim_quantized: the device's shared memory (", limit,
              " bytes) holds no int8 tile");
  const tc::Groups groups = tc::groups_for(v.Nq, v.Lq, v.layout);
  const bool vec = tc::vector_loads<int8_t>(v.dim, v.Q, v.D);
  const int blocks = static_cast<int>(std::min<int64_t>(groups.items, int64_t(1) << 30));
  launch(kernel, blocks, tc::mma::kThreads, tc::int8::smem_bytes(width), on.stream, v,
         tc::int8::Scales{q_scale, d_scale}, groups, static_cast<int>(width), vec, scores, argmax);
}

template void int8_forward<true>(const MaxSimView<int8_t>&, const float*, const float*, float*, int32_t*,
                                 LaunchTarget);
template void int8_forward<false>(const MaxSimView<int8_t>&, const float*, const float*, float*, int32_t*,
                                  LaunchTarget);

}  // namespace kdops::cuda::maxsim_serving
