// The simulator's access recorder (part of cuda_sim.h): an opt-in build mode that counts, from
// the real addresses of every warp-level access, the shared-memory wavefronts (bank conflicts)
// and the 32-byte global sectors a GPU would serve, per kernel and source line. The performance
// model (benchmarks/gpu_perf) uses the counts instead of assuming conflict-free, coalesced access.
//
// Off unless the translation units are compiled with -DKDOPS_SIM_RECORD: then the kernel's .cu is
// also compiled with g++'s ThreadSanitizer instrumentation (-fsanitize=thread, linked without its
// runtime: every plain load and store calls __tsan_{read,write}N, defined in access_record.cpp),
// and the simulated instructions that move memory themselves (ldmatrix, cp.async, the
// cache-hinted loads and stores) call record::access. Without the define none of it is compiled: the ordinary builds are unchanged.
// tests/sim/simbuild.py's "record" mode builds a program so; test_access_record.py checks it.
//
// Grouping: the accesses of one warp-level instruction are the 32 lanes' accesses at the same
// site (code address, or file:line for the simulated instructions) with the same per-lane
// occurrence count in the block. Only accesses to shared memory (the block's dynamic buffer and
// the kernel's static __shared__ variables) and to device memory (the guarded heap) are counted;
// the rest (stacks, the simulator's own state) is local memory or not the kernel's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

namespace kdops::sim::record {

enum class Kind : uint8_t { kLoad, kStore, kLdmatrix, kCpAsync };

// One lane's access: `bytes` at `address` from the calling CUDA thread, at file:line (the
// simulated instructions) or code address pc (plain accesses; file null).
void access(Kind kind, const void* address, size_t bytes, const char* file, int line, uintptr_t pc = 0);

// The runtime's events (runtime.cpp, under KDOPS_SIM_RECORD).
void begin_launch(const char* kernel, size_t dynamic_smem_bytes);
void end_block();  // the block's warp accesses are complete: count them
void suppress(bool on);  // a warp collective's completion runs in one lane for all: not the lane's accesses

// Prints one line per (kernel, site, space, kind, bytes) with the totals over every launch so
// far, tab-separated key=value fields ("kdops.sim.access" first, kernel last):
//   space=shared  requests (warp accesses), lanes, wavefronts (bank conflicts counted) and ideal
//                 (the wavefronts of the same distinct words without conflicts)
//   space=global  requests, lanes, sectors (32-byte) and ideal (the distinct bytes / 32, rounded up)
// Plain accesses name their site pc=0x<offset in the module>; addr2line gives the line.
void report(std::FILE* out);

}  // namespace kdops::sim::record

#if defined(KDOPS_SIM_RECORD)
#define KDOPS_SIM_RECORD_ACCESS(kind, address, bytes, file, line) \
  ::kdops::sim::record::access(::kdops::sim::record::Kind::kind, address, bytes, file, line)
#else
#define KDOPS_SIM_RECORD_ACCESS(kind, address, bytes, file, line) ((void)0)
#endif
