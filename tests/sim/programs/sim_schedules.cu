// Kernels that test the simulator's schedules and its memory model between blocks: a trace of the
// order in which threads run (the schedules must follow their seed and their strategy), races
// that only some schedules expose by value (a warp running ahead into the next use of shared
// memory), the project's grid_sum protocol (csrc/cuda/grid_sum.cuh) and copies of it with one
// planted bug each (for the memory model between blocks, and for the ThreadSanitizer build), and
// a helper's barrier reached from a divergent branch (the error must name the kernel's line).
// Built by tests/sim/simbuild.py.
//
//   sim_schedules <case> [seed] [t|r|w|p][b]   as sim_cases: the thread schedule, shuffled blocks
//
// Prints the case's results, or "ERROR: <message>" and exits with 3 when the simulator raised.
// Lines the tests look for carry "// @<marker>" comments. nvcc compiles the kernels too.
#include "program_options.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/block_reduce.cuh"
#include "cuda/block_scan.cuh"
#include "cuda/grid_sum.cuh"

namespace sim_schedules {  // named, so that error messages can name the kernels

constexpr unsigned kFull = 0xffffffffu;

// Each thread logs its index at two points between collectives (a __syncwarp, then a
// __syncthreads), twice: the log is the order in which the schedule ran the threads.
__global__ void schedule_trace(int* trace, unsigned* next) {
  for (int round = 0; round < 2; ++round) {
    trace[atomicAdd(next, 1u)] = threadIdx.x;
    __syncwarp();
    trace[atomicAdd(next, 1u)] = threadIdx.x;
    __syncthreads();
  }
}

// A block sum whose shared partials are reused by the next call: without the trailing barrier a
// warp that runs ahead overwrites its partial while slower warps still read the old ones.
template <bool kTrailingBarrier>
__device__ int block_total(int v) {
  alignas(16) __shared__ int partial[8];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(kFull, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  int total = 0;
  for (int w = 0; w < 8; ++w) total += partial[w];
  if (kTrailingBarrier) __syncthreads();
  return total;
}

template <bool kTrailingBarrier>
__global__ void reduce_twice(int* out) {
  const int first = block_total<kTrailingBarrier>(static_cast<int>(threadIdx.x));
  const int second = block_total<kTrailingBarrier>(1000);
  out[threadIdx.x] = first;
  out[blockDim.x + threadIdx.x] = second;
}

// The project's grid sum over a block sum of each block's values.
__global__ void project_grid_sum(const long long* x, long long* partial_sum, long long* partial_count,
                                 unsigned* done, long long* total) {
  long long sum = kdops::cuda::block_sum<256>(x[blockIdx.x * 256 + threadIdx.x]);
  long long count = kdops::cuda::block_sum<256>(1ll);
  if (kdops::cuda::grid_sum<256>(sum, count, partial_sum, partial_count, done) && threadIdx.x == 0) {
    *total = sum + count;  // count: 256 a block
  }
}

// grid_sum.cuh's protocol with a planted bug: no fence before the arrival atomic (kRelease false),
// a plain increment instead of the atomic (kAtomic false), or no fence after it in the last
// block (kAcquire false). kHinted: the partials are stored and loaded with __stcg / __ldcg, as
// grid_sum.cuh does, which the simulator's memory model between blocks checks
// (csrc/sim/global_memory.h); else with plain accesses, which only the ThreadSanitizer build
// orders (on sequential blocks their values are right).
template <bool kRelease, bool kAtomic, bool kAcquire, bool kHinted>
__global__ void planted_grid_sum(const long long* x, long long* partial, unsigned* done, long long* total) {
  __shared__ bool is_last;
  const long long sum = kdops::cuda::block_sum<256>(x[blockIdx.x * 256 + threadIdx.x]);
  if (threadIdx.x == 0) {
    if (kHinted) {
      __stcg(partial + blockIdx.x, sum);  // @hinted-store
    } else {
      partial[blockIdx.x] = sum;  // @partial-store
    }
    if (kRelease) __threadfence();
    const bool last = (kAtomic ? atomicAdd(done, 1u) : (*done)++) == gridDim.x - 1;  // @arrival
    if (last && kAcquire) __threadfence();
    is_last = last;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    long long t = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) t += kHinted ? __ldcg(partial + b) : partial[b];  // @partial-load
    *total = t;
  }
}

// Half the block calls a block-wide scan: the helper's barrier is reached by some threads only.
__global__ void scan_in_branch(int* out) {
  int carry = 0;
  int v = 1;
  if (threadIdx.x < 64) v = kdops::cuda::block_inclusive_scan<128>(v, kdops::cuda::SumOp(), carry);  // @scan-branch
  out[threadIdx.x] = v;
}

}  // namespace sim_schedules

#if defined(KDOPS_SIM)
namespace {

using kdops::sim::launch;
using namespace sim_schedules;

void print_ints(const std::vector<int>& v) {
  for (int x : v) std::printf("%d ", x);
  std::printf("\n");
}

void case_trace() {
  const int threads = 128;
  std::vector<int> trace(4 * threads, -1);
  unsigned next = 0;
  launch(schedule_trace, dim3(1), dim3(threads), 0, nullptr, trace.data(), &next);
  print_ints(trace);
}

// "reference" or "differs", then the values: the first sum is 0 + 1 + ... + 255, the second 256000.
template <bool kTrailingBarrier>
void case_reduce_twice() {
  const int threads = 256;
  std::vector<int> out(2 * threads, 0);
  launch(reduce_twice<kTrailingBarrier>, dim3(1), dim3(threads), 0, nullptr, out.data());
  bool matches = true;
  for (int t = 0; t < threads; ++t) matches &= out[t] == 255 * 256 / 2 && out[threads + t] == 256 * 1000;
  std::printf("%s\n", matches ? "reference" : "differs");
  print_ints(out);
}

constexpr int kGridBlocks = 24;

std::vector<long long> grid_values() {
  std::vector<long long> x(kGridBlocks * 256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<long long>((i * 7919) % 1001);
  return x;
}

long long grid_reference() {
  long long total = 0;
  for (long long v : grid_values()) total += v;
  return total;
}

void case_project_grid_sum() {
  const std::vector<long long> x = grid_values();
  std::vector<long long> partial_sum(kGridBlocks), partial_count(kGridBlocks);
  unsigned done = 0;
  long long total = -1;
  launch(project_grid_sum, dim3(kGridBlocks), dim3(256), 0, nullptr, x.data(), partial_sum.data(),
         partial_count.data(), &done, &total);
  std::printf("%s %lld\n", total == grid_reference() + kGridBlocks * 256 ? "reference" : "differs", total);
}

template <bool kRelease, bool kAtomic, bool kAcquire, bool kHinted>
void case_planted_grid_sum() {
  const std::vector<long long> x = grid_values();
  std::vector<long long> partial(kGridBlocks);
  unsigned done = 0;
  long long total = -1;
  launch(planted_grid_sum<kRelease, kAtomic, kAcquire, kHinted>, dim3(kGridBlocks), dim3(256), 0, nullptr, x.data(),
         partial.data(), &done, &total);
  std::printf("%s %lld\n", total == grid_reference() ? "reference" : "differs", total);
}

void case_scan_in_branch() {
  std::vector<int> out(128, 0);
  launch(scan_in_branch, dim3(1), dim3(128), 0, nullptr, out.data());
  print_ints(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (!set_schedule_from_args(argc, argv)) return 2;
  const std::string name = argv[1];

  const std::map<std::string, std::function<void()>> cases = {
      {"trace", case_trace},
      {"reduce_twice_synced", case_reduce_twice<true>},
      {"reduce_twice_racy", case_reduce_twice<false>},
      {"project_grid_sum", case_project_grid_sum},
      {"grid_sum_no_release_fence", case_planted_grid_sum<false, true, true, true>},
      {"grid_sum_plain_counter", case_planted_grid_sum<true, false, true, true>},
      {"grid_sum_no_acquire_fence", case_planted_grid_sum<true, true, false, true>},
      {"grid_sum_fenced", case_planted_grid_sum<true, true, true, true>},
      {"plain_grid_sum_no_release_fence", case_planted_grid_sum<false, true, true, false>},
      {"plain_grid_sum_plain_counter", case_planted_grid_sum<true, false, true, false>},
      {"plain_grid_sum_no_acquire_fence", case_planted_grid_sum<true, true, false, false>},
      {"plain_grid_sum_fenced", case_planted_grid_sum<true, true, true, false>},
      {"scan_in_branch", case_scan_in_branch},
  };
  return run_case(cases, name);
}
#endif
