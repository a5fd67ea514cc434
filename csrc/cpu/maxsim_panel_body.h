// The MaxSim panel kernel's one body (maxsim_panel.h), written with GCC vector extensions.
// Each ISA's file includes it after `#pragma GCC target(...)`, so the body itself is compiled
// for that ISA: with the target only on a caller, GCC lowers the vector compares and selects of
// an always_inline body before inlining it, lane by lane.
//
// A panel is two vectors of query rows; a tile is kTokens doc tokens: 2 * kTokens accumulators,
// with the two query vectors, running maxima and argmaxes 14 registers (of AVX2's 16). Wider
// tiles did not pay on AVX-512 either (32 registers): 6 or 8 tokens ran 3-6% slower than 4 at
// the reranking shape, 12 tokens 20% (Zen 4, docs/performance.md). Each doc row is read once
// per panel, the tile kPrefetchTiles ahead (or the caller's stream) prefetched as it goes
// (stream_prefetch.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/stream_prefetch.h"

namespace kdops::cpu {

// The panel kernel's parameters (maxsim_panel.h), spelled once for its declarations, ISA
// definitions and explicit instantiations.
#define KDOPS_PANEL_PARAMS(T)                                                        \
  const T *panel, const T *doc, int64_t length, int64_t dim, const bool *valid, int32_t first, \
      T *best_io, int32_t *arg_io, PrefetchRows stream

template <typename acc_t> void panel_generic(KDOPS_PANEL_PARAMS(acc_t));
template <typename acc_t> void panel_avx2(KDOPS_PANEL_PARAMS(acc_t));
template <typename acc_t> void panel_avx512(KDOPS_PANEL_PARAMS(acc_t));

namespace {

constexpr int kTokens = 4;
// How far ahead the tile being prefetched runs: 1, 2 and 3 tiles (2-6 KiB at fp32, d = 128) measured
// within 1% of each other with the docs streamed from DRAM (stream_prefetch.h: what none costs).
constexpr int64_t kPrefetchTiles = 2;

template <typename T, int kLanes>
struct Vec {
  typedef T type __attribute__((vector_size(kLanes * sizeof(T))));
};

// Similarities of each token tile with the panel's rows: sums over e in order of
// doc[t][e] * panel[e][r] (one FMA each where the ISA's file contracts them); then takes_max
// (common/maxsim.h) per lane, tokens in increasing j: the first maximal token wins, a NaN
// outranks every number, a masked token is never folded.
template <typename acc_t, int kLanes>
inline void panel_body(KDOPS_PANEL_PARAMS(acc_t)) {
  using V = typename Vec<acc_t, kLanes>::type;
  using M = decltype(V{} > V{});  // the lane mask: signed integers of acc_t's width
  constexpr int64_t rows = 2 * kLanes;
  // The rows prefetched alongside tile t0: the stream's rows t0 .., or the doc's own kPrefetchTiles
  // tiles ahead.
  const bool own = stream.rows == nullptr;
  const int64_t ahead_row_bytes = own ? dim * int64_t(sizeof(acc_t)) : stream.row_bytes;
  const void* ahead_rows = own ? bytes_ahead(doc, kPrefetchTiles * kTokens * ahead_row_bytes) : stream.rows;
  const int shift = prefetch_shift(kTokens, ahead_row_bytes, dim);
  V best[2];
  M arg[2];
  std::memcpy(best, best_io, sizeof(best));
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < kLanes; ++r) arg[h][r] = arg_io[h * kLanes + r];
  for (int64_t t0 = 0; t0 < length; t0 += kTokens) {
    // A short last tile repeats its last token (computed, never folded).
    const int64_t n = length - t0 < kTokens ? length - t0 : kTokens;
    const acc_t* token[kTokens];
    for (int t = 0; t < kTokens; ++t) token[t] = doc + (t0 + (t < n ? t : n - 1)) * dim;
    const char* ahead = bytes_ahead(ahead_rows, t0 * ahead_row_bytes);
    V acc[kTokens][2] = {};
    for (int64_t e = 0; e < dim; ++e) {
      prefetch_step(ahead, e, shift);
      V q[2];
      std::memcpy(&q[0], panel + e * rows, sizeof(V));
      std::memcpy(&q[1], panel + e * rows + kLanes, sizeof(V));
      for (int t = 0; t < kTokens; ++t) {
        const acc_t x = token[t][e];
        acc[t][0] += x * q[0];
        acc[t][1] += x * q[1];
      }
    }
    // Unrolled, so the accumulators stay in registers (a loop to n kept them in a stack array,
    // zeroed by a rep stos each tile: 2.7% of the kernel's perf samples at the reranking shape).
#pragma GCC unroll kTokens
    for (int t = 0; t < kTokens; ++t) {
      if (t >= n || (valid != nullptr && !valid[t0 + t])) continue;
      for (int h = 0; h < 2; ++h) {
        const V v = acc[t][h];
        const M take = (arg[h] < 0) | (v > best[h]) | ((v != v) & (best[h] == best[h]));
        best[h] = take ? v : best[h];
        arg[h] = take ? (M{} + static_cast<int32_t>(first + t0 + t)) : arg[h];
      }
    }
  }
  std::memcpy(best_io, best, sizeof(best));
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < kLanes; ++r) arg_io[h * kLanes + r] = static_cast<int32_t>(arg[h][r]);
}

}  // namespace
}  // namespace kdops::cpu
