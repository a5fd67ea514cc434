// Software prefetch for a kernel that streams doc token rows once, a tile of consecutive rows at a
// time (the MaxSim panel kernel; a quantized variant of it can use the same helper).
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

// Step `step` of a loop over a tile of contiguous rows that reads kStepBytes bytes of it per step
// (a tile of kTokens rows, one element of each row a step: kStepBytes = kTokens * element size):
// walks the bytes of the tile at `ahead` (one that runs some tiles later) at the same pace,
// prefetching into L1 one line every kCacheLine / kStepBytes steps, so that tile has arrived
// when its turn comes.
template <int64_t kStepBytes>
inline void prefetch_step(const char* ahead, int64_t step) {
  static_assert(kStepBytes > 0 && kCacheLine % kStepBytes == 0,
                "a step must read a whole fraction of a cache line of the tile");
  if (step % (kCacheLine / kStepBytes) == 0) __builtin_prefetch(ahead + step * kStepBytes, 0, 3);
}

}  // namespace kdops::cpu
