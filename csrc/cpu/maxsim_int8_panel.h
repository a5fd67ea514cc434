// The int8 x int8 MaxSim micro-kernel (maxsim_quantized), chosen at run time: exact int32 dot
// products of one panel of query rows with a run of doc tokens, each scaled by its token's
// scale into a float32 similarity and folded into the panel's running max and first-index
// argmax (common/maxsim.h takes_max: tokens in increasing j, NaN above every number).
//
// The panel holds the query rows offset by +128 as uint8 (so that AVX-512 VNNI's vpdpbusd,
// uint8 x int8, takes them): sum_e (q_e + 128) d_e = <q, d> + 128 sum_e d_e, and the caller
// passes bias[t] = 128 * sum_e d_t[e] per doc token, which the kernel subtracts. Every step is
// an integer one, so the dot product is exact on every path; its float32 conversion is exact
// while |<q, d>| <= 2^24 (d <= 1024 with -128 entries, 1040 in quantize_int8's [-127, 127]).
#pragma once

#include <cstdint>

#include "cpu/cpu_isa.h"

namespace kdops::cpu {

// Query rows per panel, on every path (one packing for all).
constexpr int64_t kInt8PanelRows = 32;

// panel: [ceil(dim / 4)][kInt8PanelRows][4] uint8, row r's dims 4g..4g+3 at group g (dims past
// `dim` any value); doc: [length][dim] int8; bias, scale, valid (or nullptr): [length]; tokens
// are first .. first + length - 1. best / arg: [kInt8PanelRows], updated.
struct MaxSimInt8PanelKernel {
  const char* name;
  void (*fn)(const uint8_t* panel, const int8_t* doc, int64_t length, int64_t dim,
             const int32_t* bias, const float* scale, const bool* valid, int32_t first,
             float* best, int32_t* arg);
};

// AVX-512 VNNI (vpdpbusd) when `isa` is avx512 and the CPU has VNNI, else the generic loop.
MaxSimInt8PanelKernel maxsim_int8_panel_kernel(CpuIsa isa);

// The per-token bias of the panel's offset: 128 * sum_e doc[t][e], t < length.
void int8_token_bias(const int8_t* doc, int64_t length, int64_t dim, int32_t* bias);

}  // namespace kdops::cpu
