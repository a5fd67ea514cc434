// Sorting networks for short rows of float rank keys (RankKeyOf<float>: one uint64, the rank
// image high and the index low, so keys are distinct and their order total), in AVX-512 or AVX2
// registers. A row of up to 128 keys is a bitonic network over 1, 2, 4, 8 or 16 vectors of 8 keys
// (AVX-512) or 1 .. 32 vectors of 4 (AVX2), with no branches on the data, where the radix sort of
// radix_rank.h spends most of a 32-key row on clearing and scanning its 4 x 256 counters.
// One thread, keys in random order with ties: on a Xeon (AVX-512) 32 keys 43 ns against the radix
// sort's 190-220 ns, 64 keys 94 against 250, 128 keys 190 against 380-650. On an AMD EPYC with
// AVX2, ListMLE fwd+bwd (KDOPS_CPU_ISA=generic against avx2, in turns in one process): B=4096
// n=32 4.6 ms with the radix sort, 2.1 with the network; B=256 n=64 0.45 -> 0.31, n=128 0.68 -> 0.57.
#pragma once

#include <cstddef>
#include <cstdint>

// x86 only: elsewhere the functions do not exist, and radix_rank.h compiles no call to them.
#if defined(__x86_64__) || defined(__i386__)
#define KDOPS_RANK_SORT_NETWORK 1

namespace kdops::cpu {

// The longest row the networks sort.
constexpr size_t kNetworkMaxKeys = 128;

// Sort keys[0..n) ascending, n <= kNetworkMaxKeys. Call only where the CPU has the ISA
// (cpu_isa()).
void sort_rank_keys_network_avx512(uint64_t* keys, size_t n);
void sort_rank_keys_network_avx2(uint64_t* keys, size_t n);

}  // namespace kdops::cpu
#endif
