// The int8 x int8 MaxSim micro-kernel (maxsim_quantized), chosen at run time: exact int32 dot
// products of one panel of query rows with a run of doc tokens, each scaled by its token's
// scale into a float32 similarity and folded into the panel's running max and first-index
// argmax (common/maxsim.h takes_max: tokens in increasing j, NaN above every number).
//
// AVX-512 VNNI's vpdpbusd multiplies uint8 by int8 bytes. The kernels offset the doc bytes by
// +128 as uint8 as they read them (d_e ^ 0x80; on AVX-512 one vpxord per token and 4 dims, whose
// broadcast load replaces the plain one), the query rows stay int8, and each row's accumulators
// start at -128 sum_e q_e: -128 sum_e q_e + sum_e q_e (d_e + 128) = <q, d>, with no per-token
// term. Every step is an integer one (wrapping, and the result fits in int32:
// common/maxsim_serving_inputs.h kInt8MaxDim), so the dot product is exact on every path; its
// float32 conversion is exact while |<q, d>| <= 2^24 (d <= 1024 with -128 entries, 1040 in
// quantize_int8's [-127, 127]).
// (Offsetting the query instead, the doc bytes as they are, needs a bias per doc token,
// 128 sum_e d_e: a pass over every doc byte that took 30% of the kernel's time at the reranking
// shape; a +128 copy of each token block, 10% (benchmarks/cpu/maxsim_int8_panel_stream.cpp).)
#pragma once

#include <cstdint>

#include "cpu/cpu_isa.h"

namespace kdops::cpu {

// Query rows per panel, on every path (one packing for all).
constexpr int64_t kInt8PanelRows = 32;

// The bytes of a panel of `dim` dims: ceil(dim / 4) groups of 4 dims for each row.
inline int64_t int8_panel_bytes(int64_t dim) { return (dim + 3) / 4 * kInt8PanelRows * 4; }

// panel: [ceil(dim / 4)][kInt8PanelRows][4] int8, row r's dims 4g..4g+3 at group g, dims past
// `dim` 0; start: [kInt8PanelRows], -128 * the sum of row r's dims; doc: [length][dim] int8;
// scale (finite, as the op checks), valid (or nullptr): [length]; tokens are first .. first +
// length - 1. best / arg: [kInt8PanelRows], updated.
struct MaxSimInt8PanelKernel {
  const char* name;
  void (*fn)(const int8_t* panel, const int32_t* start, const int8_t* doc, int64_t length,
             int64_t dim, const float* scale, const bool* valid, int32_t first, float* best,
             int32_t* arg);
};

// AVX-512 VNNI (vpdpbusd) when `isa` is avx512 and the CPU has VNNI, else the generic loop.
MaxSimInt8PanelKernel maxsim_int8_panel_kernel(CpuIsa isa);

// The panel of `count` query rows [count][dim] int8 (count <= kInt8PanelRows; the missing rows
// zero) and its rows' start values.
void int8_pack_panel(const int8_t* rows, int64_t count, int64_t dim, int8_t* panel, int32_t* start);

}  // namespace kdops::cpu
