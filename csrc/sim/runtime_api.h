// The simulator's runtime interface (part of cuda_sim.h): options, the simulated device, the
// launch, and the calls the CUDA built-ins make into runtime.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "async_copy.h"
#include "host_api.h"
#include "keywords.h"

namespace kdops::sim {

// How the next ready thread of a block is chosen at every switch (a thread runs until it reaches
// a barrier, a warp collective or its exit). Every strategy but kInOrder draws from `seed`.
enum class Schedule {
  kInOrder,     // first come, first served: ascending thread order after each barrier
  kRandom,      // a uniformly random ready thread
  kRunAhead,    // depth first by warp: the running warp goes on while any lane of it is ready;
                // when none is, a random warp with a ready lane takes over (one warp gets far
                // ahead of the others: write-after-read races on shared memory)
  kRoundRobin,  // one step of each warp in turn, in a seeded order of the warps (warps in lockstep)
  kPct,         // PCT (Burckhardt et al., ASPLOS 2010) over warps: random distinct priorities, the
                // highest-priority warp with a ready lane runs; at pct_depth - 1 random switches
                // the running warp drops below every other (finds a bug of depth d with
                // probability >= 1 / (warps * k^(d-1)), k the block's switches)
};

// Process-wide; each launch reads them once when it starts.
struct Options {
  uint64_t seed = 0;
  Schedule threads = Schedule::kInOrder;
  int pct_depth = 3;            // kPct's d: d - 1 priority change points per block
  bool shuffle_blocks = false;  // seeded random order of the blocks
};
void set_options(const Options& options);
Options options();

struct DeviceProperties {
  const char* name;
  int multiProcessorCount;
  size_t sharedMemPerBlock;       // dynamic shared memory a launch gets without opting in
  size_t sharedMemPerBlockOptin;  // the most cudaFuncSetAttribute can raise that to
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int warpSize;
};
DeviceProperties h100();          // 132 SMs, 48 KiB default / 227 KiB opt-in shared memory
DeviceProperties small_device();  // 2 SMs, 48 KiB shared memory, opt-in included
void set_device(const DeviceProperties& properties);  // process-wide; h100() until set
DeviceProperties device();
// Kernel launches since the process started (every thread's): tests count an op's launches.
uint64_t launch_count();

namespace detail {

// Where a collective was called from (default arguments of the built-ins), and, when a helper
// (block_sum, shfl_down, ...) made the call, the line in the kernel that called the helper.
struct Site {
  const char* file;
  int line;
  const char* caller_file = nullptr;
  int caller_line = 0;
};

// What a running CUDA thread's built-in variables read (runtime.cpp keeps it per fiber).
struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  void* dynamic_smem;
  unsigned int lane;
  AsyncCopies async_copies;  // cp.async copies not yet waited for (<cuda_pipeline.h>)
};

// The running CUDA thread of this OS thread; null outside a launch.
inline thread_local ThreadState* current_thread = nullptr;

inline ThreadState& current() { return *current_thread; }
inline void* dynamic_smem() { return current_thread->dynamic_smem; }

enum class BarrierKind { kSync, kCount, kAnd, kOr };
// __syncthreads and its reducing forms; returns the count / and / or of pred over the block.
int barrier(BarrierKind kind, int predicate, Site site);

enum class WarpOp { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kSyncWarp, kReduceAdd, kReduceMin, kReduceMax, kCall };
// A warp collective over `mask`: blocks until every lane of mask has called the same op at the
// same site, then returns this lane's result. value: the lane's operand (shuffle payload bits,
// predicate, or reduce operand); arg: source lane / delta / lane mask for shuffles.
uint64_t warp_op(WarpOp op, unsigned int mask, uint64_t value, int arg, int width, Site site);

// A warp-wide operation implemented by the caller (WMMA): once all 32 lanes have arrived with
// the same `complete` at the same site, the last lane calls complete(lane_data) with each
// lane's `data`, then every lane returns. `what` names it in errors.
using WarpCompletion = void (*)(void* const* lane_data);
void warp_call(const char* what, void* data, WarpCompletion complete, Site site);

// CUDA's memory model between blocks (device-scope fences, relaxed atomics): an atomic after a
// __threadfence of the same thread is a release on the atomic's address, and a __threadfence
// after atomics is an acquire from their addresses (the PTX release and acquire patterns).
// Both feed global_memory.h's model, which checks the cache-hinted loads (weak_load) against the
// cache-hinted stores (weak_store) of other blocks. Under ThreadSanitizer they are also
// happens-before edges, for plain accesses. Approximations, on the side of fewer reports: the TSan
// release covers the thread's accesses up to the atomic, not only those before the fence, and
// the acquire looks back at the last kTrackedAtomics addresses only.
void fence_point();
void atomic_point(const void* address);
void weak_store(void* address, const void* value, size_t size, Site site);  // __stcg, __stcs, __stwb, __stwt
void weak_load(void* out, const void* address, size_t size, Site site);     // __ldcg, __ldcs, __ldcv, __ldlu

// Aborts the running launch with `message` (plus the warp_call's site, kernel, block, thread):
// for checks inside a WarpCompletion, the only place header code may call it, and for memory
// faults (faults.cpp). Never returns.
[[noreturn]] void fail(const char* message);

// Type-erased launch.
struct Launch {
  const void* kernel;        // for its name and its cudaFuncSetAttribute limits
  const char* name;          // or null
  const char* signature;     // __PRETTY_FUNCTION__ of signature<kernel type>()
  void (*run)(const void*);  // runs the kernel in the current thread
  const void* state;
  size_t state_size;         // the bytes of *state: the parameters (guarded_heap.h scans them)
  dim3 grid, block;
  size_t dynamic_smem_bytes;
};
void launch(const Launch& launch);  // throws std::runtime_error

template <typename Kernel, typename Params>
struct KernelCall {
  Kernel kernel;
  Params params;
  static void run(const void* self) {
    const KernelCall& call = *static_cast<const KernelCall*>(self);
    std::apply(call.kernel, call.params);  // each thread gets its own copy of every parameter
  }
};

template <typename Kernel>
const char* signature() {
  return __PRETTY_FUNCTION__;
}

}  // namespace detail

// Runs kernel<<<grid, block, dynamic_smem_bytes, stream>>>(args...) to completion on the calling
// OS thread. The arguments are converted to the kernel's parameter types once, as a CUDA launch
// does. Throws std::runtime_error on an invalid launch configuration or on any error a check of
// the simulator finds (barrier divergence, bad shuffles, deadlock, ...). Errors name the kernel
// by `name` if given (a launch macro can pass #kernel), else by its symbol if it has a dynamic
// one, else by its type.
template <typename... Params, typename... Args>
void launch_named(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                  cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kdops::sim::launch: wrong number of kernel arguments");
  (void)stream;  // launches are synchronous
  using Call = detail::KernelCall<void (*)(Params...), std::tuple<std::decay_t<Params>...>>;
  const Call call{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  detail::launch(detail::Launch{reinterpret_cast<const void*>(kernel), name, detail::signature<void (*)(Params...)>(),
                                &Call::run, &call, sizeof(call), grid, block, dynamic_smem_bytes});
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_smem_bytes, cudaStream_t stream,
            Args&&... args) {
  launch_named(nullptr, kernel, grid, block, dynamic_smem_bytes, stream, std::forward<Args>(args)...);
}

}  // namespace kdops::sim
