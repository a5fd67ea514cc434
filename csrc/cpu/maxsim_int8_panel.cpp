// The int8 MaxSim panel kernel (maxsim_int8_panel.h): the ISA choice and the generic loop.
#include "cpu/maxsim_int8_panel.h"

#include <vector>

#include "common/maxsim.h"
#include "cpu/cpu_clones.h"

namespace kdops::cpu {

void int8_panel_vnni(const uint8_t* panel, const int8_t* doc, int64_t length, int64_t dim,
                     const int32_t* bias, const float* scale, const bool* valid, int32_t first,
                     float* best, int32_t* arg);  // maxsim_int8_panel_vnni.cpp

namespace {

// The panel transposed to [dim][rows] int32 first (a few thousand values, against dim x rows
// multiply-adds per doc token): the rows are then the contiguous inner loop, which compilers
// vectorise (cloned for AVX-512 and AVX2 where the CPU has them).
KDOPS_CPU_CLONES void int8_panel_generic(const uint8_t* panel, const int8_t* doc, int64_t length, int64_t dim,
                                         const int32_t* bias, const float* scale, const bool* valid,
                                         int32_t first, float* best, int32_t* arg) {
  constexpr int64_t rows = kInt8PanelRows;
  std::vector<int32_t> q(dim * rows);
  for (int64_t e = 0; e < dim; ++e)
    for (int64_t r = 0; r < rows; ++r) q[e * rows + r] = panel[(e / 4) * rows * 4 + r * 4 + e % 4];
  for (int64_t t = 0; t < length; ++t) {
    if (valid != nullptr && !valid[t]) continue;
    int32_t acc[rows] = {};
    for (int64_t e = 0; e < dim; ++e) {
      const int32_t x = doc[t * dim + e];
      for (int64_t r = 0; r < rows; ++r) acc[r] += q[e * rows + r] * x;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float v = static_cast<float>(acc[r] - bias[t]) * scale[t];
      if (takes_max(v, best[r], arg[r])) {
        best[r] = v;
        arg[r] = first + static_cast<int32_t>(t);
      }
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
bool has_vnni() { return __builtin_cpu_supports("avx512vnni"); }
#else
bool has_vnni() { return false; }
#endif

}  // namespace

MaxSimInt8PanelKernel maxsim_int8_panel_kernel(CpuIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == CpuIsa::avx512 && has_vnni()) return {"avx512-vnni", &int8_panel_vnni};
#endif
  return {"generic", &int8_panel_generic};
}

void int8_token_bias(const int8_t* doc, int64_t length, int64_t dim, int32_t* bias) {
  for (int64_t t = 0; t < length; ++t) {
    int32_t sum = 0;
    for (int64_t e = 0; e < dim; ++e) sum += doc[t * dim + e];
    bias[t] = 128 * sum;
  }
}

}  // namespace kdops::cpu
