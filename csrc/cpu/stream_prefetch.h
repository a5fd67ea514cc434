// Software prefetch for a kernel that streams doc token rows once, a tile of consecutive rows at a
// time (the MaxSim panel kernel; a quantized variant of it can use the same helper), or that
// reads rows decoded from a stream of codes it prefetches alongside (the serving ops' next block).
//
// Why: such a kernel reads a tile's rows side by side (kTokens rows, one element column after
// the next), not one address after the next, and the hardware prefetchers do not run far enough
// ahead of that pattern. Measured on a 2-core AMD EPYC VM (Zen 4, AVX-512), one thread, the
// AVX-512 fp32 panel kernel, 32 query rows against 1000 docs x 300 tokens x d=128 (154 MB,
// streamed from DRAM): 57 GFLOP/s without, 106 with a line of the tile 2 tiles ahead prefetched
// every few steps; the same docs hot in L2 ran 96 and 107. Spreading matters: all of the next
// tile's lines prefetched at once at the start of a tile gave 72. (The kernel alone:
// benchmarks/cpu/maxsim_panel_stream.cpp; the structure and the op's figures: docs/performance.md.)
#pragma once

#include <cstdint>

namespace kdops::cpu {

constexpr int64_t kCacheLine = 64;

// The address `bytes` past p, as an integer sum: the tiles ahead of the last ones a call reads
// lie past its rows (usually the next doc's rows, next to run), or past the tensor. A prefetch
// never faults; forming a pointer past an array would be undefined.
inline const char* bytes_ahead(const void* p, int64_t bytes) {
  return reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes));
}

// Rows a kernel prefetches as it goes, one row per row it reads (rows: nullptr where the kernel
// prefetches its own rows ahead). The serving ops decode a block of doc tokens, then fold it: the
// kernel that folds block b prefetches the codes of block b + 1, so its decode does not wait on
// DRAM (a burst of them before the kernel ran slower than none: docs/performance.md).
struct PrefetchRows {
  const void* rows;
  int64_t row_bytes;
};

// How a loop over a tile of `tokens` rows, `dim` steps (one element of each row a step), spreads
// the prefetch of `tokens` rows of `row_bytes`: one line every 2^shift steps, the longest
// power-of-two spacing that keeps pace with the bytes (where the pace is not a power of two, up
// to twice the tile's lines: the next tile's, early).
inline int prefetch_shift(int64_t tokens, int64_t row_bytes, int64_t dim) {
  int shift = 0;
  while (shift < 30 && (int64_t(2) << shift) * tokens * row_bytes <= kCacheLine * dim) ++shift;
  return shift;
}

// Step `step` of that loop: walks the tile's bytes at `ahead` (the tile of the stream, or of the
// rows some tiles later) at the same pace, prefetching into L1 one line every 2^shift steps, so
// they have arrived when their turn comes.
inline void prefetch_step(const char* ahead, int64_t step, int shift) {
  if ((step & ((int64_t(1) << shift) - 1)) == 0) __builtin_prefetch(ahead + (step >> shift) * kCacheLine, 0, 3);
}

}  // namespace kdops::cpu
