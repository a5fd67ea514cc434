// Sorting networks for short rows of float rank keys (RankKeyOf<float>: one uint64, the rank
// image high and the index low, so keys are distinct and their order total), in AVX-512
// registers. A row of up to 128 keys is a bitonic network over 1, 2, 4, 8 or 16 vectors of 8
// keys, with no branches on the data, where the radix sort of radix_rank.h spends most of a
// 32-key row on clearing and scanning its 4 x 256 counters. One thread, keys in random order
// with ties, this machine (Xeon, AVX-512): 32 keys 43 ns against the radix sort's 190-220 ns,
// 64 keys 94 against 250, 128 keys 190 against 380-650.
#pragma once

#include <cstddef>
#include <cstdint>

// x86 only: elsewhere the function does not exist, and radix_rank.h compiles no call to it.
#if defined(__x86_64__) || defined(__i386__)
#define KDOPS_RANK_SORT_NETWORK_AVX512 1

namespace kdops::cpu {

// The longest row the network sorts.
constexpr size_t kNetworkMaxKeys = 128;

// Sorts keys[0..n) ascending, n <= kNetworkMaxKeys. Call only where the CPU has AVX-512
// (cpu_isa() == CpuIsa::avx512).
void sort_rank_keys_network_avx512(uint64_t* keys, size_t n);

}  // namespace kdops::cpu
#endif
