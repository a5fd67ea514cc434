// The int8 MaxSim panel kernel (maxsim_int8_panel.h): the ISA choice, the generic loop and the
// packing of query rows.
#include "cpu/maxsim_int8_panel.h"

#include <algorithm>
#include <vector>

#include "common/maxsim.h"
#include "cpu/cpu_clones.h"

namespace kdops::cpu {

void int8_panel_vnni(const int8_t* panel, const int32_t* start, const int8_t* doc, int64_t length,
                     int64_t dim, const float* scale, const bool* valid, int32_t first,
                     float* best, int32_t* arg);  // maxsim_int8_panel_vnni.cpp

namespace {

// The panel transposed to [dim][rows] first (a few thousand values, against dim x rows
// multiply-adds per doc token): the rows are then the contiguous inner loop, which compilers
// vectorise (cloned for AVX-512 and AVX2 where the CPU has them). Sums in uint32, which wraps
// as vpdpbusd does: from the start value, a partial sum may pass int32's range, the result
// does not.
KDOPS_CPU_CLONES void int8_panel_generic(const int8_t* panel, const int32_t* start, const int8_t* doc,
                                         int64_t length, int64_t dim, const float* scale,
                                         const bool* valid, int32_t first, float* best, int32_t* arg) {
  constexpr int64_t rows = kInt8PanelRows;
  std::vector<uint32_t> q(dim * rows);
  for (int64_t e = 0; e < dim; ++e)
    for (int64_t r = 0; r < rows; ++r) q[e * rows + r] = static_cast<uint32_t>(panel[(e / 4) * rows * 4 + r * 4 + e % 4]);
  for (int64_t t = 0; t < length; ++t) {
    if (valid != nullptr && !valid[t]) continue;
    uint32_t acc[rows];
    for (int64_t r = 0; r < rows; ++r) acc[r] = static_cast<uint32_t>(start[r]);
    for (int64_t e = 0; e < dim; ++e) {
      const uint32_t x = static_cast<uint8_t>(doc[t * dim + e] ^ 0x80);  // d + 128
      for (int64_t r = 0; r < rows; ++r) acc[r] += q[e * rows + r] * x;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float v = static_cast<float>(static_cast<int32_t>(acc[r])) * scale[t];
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

void int8_pack_panel(const int8_t* rows, int64_t count, int64_t dim, int8_t* panel, int32_t* start) {
  constexpr int64_t lanes = kInt8PanelRows;
  std::fill(panel, panel + int8_panel_bytes(dim), int8_t(0));
  std::fill(start, start + lanes, 0);
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t e = 0; e < dim; ++e) {
      panel[(e / 4) * lanes * 4 + r * 4 + e % 4] = rows[r * dim + e];
      start[r] -= 128 * rows[r * dim + e];
    }
  }
}

}  // namespace kdops::cpu
