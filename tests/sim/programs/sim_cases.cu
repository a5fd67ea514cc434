// Kernels that test the CUDA simulator itself: correct kernels whose results must match a CPU
// reference under every thread/block order, and planted bugs each check must catch. Built by
// tests/sim/simbuild.py with g++ against csrc/sim (plain, ASan+UBSan and TSan builds).
//
//   sim_cases <case> [seed] [t|r|w|p][b]   threads: t random, r run-ahead, w warp round-robin,
//                                          p PCT (default in order); b: shuffle blocks
//
// Prints the case's results (hex, so floats compare bit for bit) or "ERROR: <message>" and exits
// with 3 when the simulator raised. Lines the tests look for carry "// @<marker>" comments.
// The kernels are plain CUDA: nvcc compiles this file too (the host cases need the simulator).
#include "program_options.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <immintrin.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "csrc/sim/portable.h"

namespace sim_cases {  // named, so that error messages can name the kernels

constexpr unsigned kFull = 0xffffffffu;

// ---------------------------------------------------------------- correct kernels

// Per-block sum: grid-stride loads, warp shuffles, warp sums in static shared memory.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) block_sum(const float* __restrict__ x, int n, float* partial) {
  alignas(16) __shared__ float warp_sums[kThreads / 32];
  float v = 0.f;
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads) v += x[i];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFull, v, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.f;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFull, v, offset);
    if (threadIdx.x == 0) partial[blockIdx.x] = v;
  }
}

// Grid sum in one launch: per-block sums, then the last block (atomicInc) adds the partials.
__global__ void grid_sum(const int* x, int n, long long* partial, unsigned* done, long long* total,
                         unsigned long long* atomic_total) {
  __shared__ bool is_last;
  alignas(16) __shared__ long long sums[256];
  long long v = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    v += x[i];
    atomicAdd(atomic_total, static_cast<unsigned long long>(x[i]));
  }
  sums[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sums[threadIdx.x] += sums[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = sums[0];
    __threadfence();  // release: the partial before the count
    const bool last = atomicInc(done, gridDim.x - 1) == gridDim.x - 1;
    if (last) __threadfence();  // acquire: the others' partials after their count
    is_last = last;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    long long t = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) t += __ldcg(partial + b);
    *total = t;
  }
}

template <typename T>
__device__ void swap_values(T& a, T& b) {
  const T t = a;
  a = b;
  b = t;
}

// Bitonic argsort of n <= 2 * blockDim.x keys (descending key, ascending index on ties), padded
// to a power of two in dynamic shared memory.
__global__ void bitonic_argsort(const int* keys, int n, int* order) {
  KDOPS_DYNAMIC_SMEM(int, smem);
  const int padded = 2 * blockDim.x;
  int* k = smem;
  int* idx = smem + padded;
  for (int i = threadIdx.x; i < padded; i += blockDim.x) {
    k[i] = i < n ? keys[i] : INT32_MIN;
    idx[i] = i;
  }
  __syncthreads();
  for (int size = 2; size <= padded; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < padded; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          // "before(a, b)": a sorts first (bigger key, or equal key and smaller index).
          const bool i_first = k[i] > k[j] || (k[i] == k[j] && idx[i] < idx[j]);
          const bool ascending_block = (i & size) == 0;
          if (ascending_block != i_first) {
            swap_values(k[i], k[j]);
            swap_values(idx[i], idx[j]);
          }
        }
      }
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x) order[i] = idx[i];
}

// One warp computes C = A (16x16, row-major) * B (16x16, col-major) with tensor-core fragments.
template <typename T>
__global__ void wmma_gemm(const T* a, const T* b, float* c, float scale) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= scale;  // element-wise, same in every lane: fine
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

// int8: C (16x16, int32) = A (16x16 s8, row-major) * B (16x16 s8, row-major), exact.
__global__ void wmma_s8(const signed char* a, const signed char* b, int* c) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc;
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_col_major);  // accumulate onto C's transpose
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

// TF32: C (16x16) = A (16x8, row-major) * B (8x16, row-major), inputs rounded with __float_to_tf32.
__global__ void wmma_tf32(const float* a, const float* b, float* c) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a, 8);
  wmma::load_matrix_sync(fb, b, 16);
  for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
  for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

// Lane-dependent edit of a fragment element: depends on the hardware's fragment layout.
__global__ void wmma_lane_edit(const half* a, const half* b, float* c) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  if (threadIdx.x % 32 == 3) acc.x[0] = 0.0f;  // "clear element (0,0)", assuming lane 3 holds it
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);  // @wmma-store
}

// A warp stores a WMMA tile to shared memory, then each lane reads an element another lane
// stored: right only with the __syncwarp between (each lane stores its own share).
template <bool synced>
__global__ void wmma_store_then_read(float* out) {
  using namespace nvcuda;
  alignas(32) __shared__ float tile[256];
  for (int i = threadIdx.x; i < 256; i += 32) tile[i] = -1.0f;
  __syncwarp();
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 2.0f);
  wmma::store_matrix_sync(tile, acc, 16, wmma::mem_row_major);
  if (synced) __syncwarp();
  out[threadIdx.x] = tile[(threadIdx.x * 8 + 1) % 256];
}

// Reverses each block's slice through shared memory; `synced` puts the barrier in.
template <bool synced>
__global__ void reverse_block(const int* in, int* out) {
  alignas(16) __shared__ int tile[128];
  const int base = blockIdx.x * blockDim.x;
  tile[threadIdx.x] = in[base + threadIdx.x];
  if (synced) __syncthreads();
  out[base + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

// Reads a static __shared__ word before the block writes it, then writes it: the block that runs
// second must see the poison (0xFF bytes), not the word the first block left (static __shared__
// is thread-local storage on the simulator, reused by the next block).
__global__ void static_smem_read_first(int* out) {
  __shared__ int word;
  const int seen = word;  // @static-read-first
  __syncthreads();
  if (threadIdx.x == 0) word = 7;
  __syncthreads();
  out[threadIdx.x] = seen;  // the block that runs second writes last
}

// Thread 5 reads through a wild pointer: a memory fault in one CUDA thread.
__global__ void wild_read(int* out) {
  const int* wild = reinterpret_cast<const int*>(static_cast<uintptr_t>(64));
  out[threadIdx.x] = threadIdx.x == 5 ? *reinterpret_cast<const volatile int*>(wild) : 1;  // @wild-read
}

// The last thread writes one element past the end of `out` (a wrong bound), which is reached
// through a struct passed by value, as kernels pass their arguments.
struct Output {
  int* data;
  int n;
};
__global__ void write_past_end(Output out) {
  if (threadIdx.x <= out.n) out.data[threadIdx.x] = 1;  // @past-end
}

// Lanes exchange values through shared memory; `synced` separates the writes from the reads with
// __syncwarp, called from two sites (allowed since Volta: it is not a per-site rendezvous).
template <bool synced>
__global__ void warp_exchange(int* out) {
  alignas(16) __shared__ int s[64];
  const int lane = threadIdx.x % 32, base = threadIdx.x / 32 * 32;
  s[threadIdx.x] = static_cast<int>(threadIdx.x) * 3;
  if (synced) {
    if (lane % 2 == 0) {
      __syncwarp();
    } else {
      __syncwarp();
    }
  }
  out[blockIdx.x * 64 + threadIdx.x] = s[base + (lane + 1) % 32];  // @warp-exchange-read
}

// Threads of a 3-D block and 2-D grid report where they are.
__global__ void layout(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * blockIdx.y;
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  out[block * n + t] = (threadIdx.z << 16) | (threadIdx.y << 8) | threadIdx.x;
  out[gridDim.x * gridDim.y * n + block] = (blockIdx.y << 8) | blockIdx.x;
}

// Votes, block reductions, warp reductions and shuffles with sub-warp widths.
__global__ void votes(int* out) {
  const int t = threadIdx.x, lane = t % 32;
  const unsigned active = __activemask();  // first: no lane has exited yet
  const int count = __syncthreads_count(t % 3 == 0);
  const int all = __syncthreads_and(t < 1000);
  const int any = __syncthreads_or(t == 17);
  const unsigned ballot = __ballot_sync(kFull, lane % 5 == 0);
  const int any_lane = __any_sync(kFull, lane == 31);
  const int all_lanes = __all_sync(kFull, lane < 31);
  const unsigned sum = __reduce_add_sync(kFull, static_cast<unsigned>(lane));
  const int up = __shfl_up_sync(kFull, lane, 3, 8);      // lanes 0-2 of each 8-lane segment keep theirs
  const int down = __shfl_down_sync(kFull, lane, 5, 16);  // lanes 11-15 of each 16-lane segment keep theirs
  const int idx = __shfl_sync(kFull, lane * 10, 9, 4);    // lane 1 of each 4-lane segment
  const int half_mask = lane < 16 ? __shfl_xor_sync(0x0000ffffu, lane, 1) : -1;
  out[t * 12 + 0] = count;
  out[t * 12 + 1] = all;
  out[t * 12 + 2] = any;
  out[t * 12 + 3] = static_cast<int>(ballot);
  out[t * 12 + 4] = any_lane;
  out[t * 12 + 5] = all_lanes;
  out[t * 12 + 6] = static_cast<int>(sum);
  out[t * 12 + 7] = up;
  out[t * 12 + 8] = down;
  out[t * 12 + 9] = idx;
  out[t * 12 + 10] = half_mask;
  out[t * 12 + 11] = static_cast<int>(active);
}

// cp.async (<cuda_pipeline.h>): each of 64 threads copies 16 bytes of its block's slice into
// shared memory, waits for its copy (`waited`; the planted bug skips the wait), and after a
// barrier reads the slice reversed.
template <bool waited>
__global__ void async_copy_reverse(const int4* in, int4* out) {
  alignas(16) __shared__ int4 tile[64];
  const int base = blockIdx.x * 64;
  __pipeline_memcpy_async(&tile[threadIdx.x], &in[base + threadIdx.x], sizeof(int4));
  __pipeline_commit();
  if (waited) __pipeline_wait_prior(0);
  __syncthreads();
  out[base + threadIdx.x] = tile[63 - threadIdx.x];
}

// A two-stage cp.async pipeline: tile t + 1 is copied while tile t is read. Every iteration
// commits one batch (empty at the end), so after committing tile t + 1's, waiting until at most
// kInFlight = 1 batch is in flight means tile t has landed; kInFlight = 2 (the planted bug) reads
// tile t while it may still be in flight.
template <int kInFlight>
__global__ void async_copy_pipeline(const int* in, int tiles, int* out) {
  alignas(16) __shared__ int buffer[2][64];
  const int t0 = threadIdx.x;
  __pipeline_memcpy_async(&buffer[0][t0], &in[t0], sizeof(int));
  __pipeline_commit();
  int sum = 0;
  for (int t = 0; t < tiles; ++t) {
    if (t + 1 < tiles) __pipeline_memcpy_async(&buffer[(t + 1) % 2][t0], &in[(t + 1) * 64 + t0], sizeof(int));
    __pipeline_commit();
    __pipeline_wait_prior(kInFlight);
    __syncthreads();
    sum += buffer[t % 2][63 - t0];
    __syncthreads();  // tile t is read before the next iteration copies tile t + 2 over it
  }
  out[t0] = sum;
}

// ---------------------------------------------------------------- planted bugs

#if defined(KDOPS_SIM)
__global__ void launches_a_kernel(int* out) {  // dynamic parallelism is not simulated
  kdops::sim::launch(reverse_block<true>, dim3(1), dim3(32), 0, nullptr, out, out);
}
#endif

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();  // @divergent-a
  } else {
    __syncthreads();  // @divergent-b
  }
  out[threadIdx.x] = 1;
}

__global__ void exit_before_barrier(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();  // @exit-barrier
  out[threadIdx.x] = 1;
}

template <int kWidth>
__global__ void warp_sum_width(const int* in, int* out) {
  int v = in[threadIdx.x];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFull, v, offset, kWidth);  // @width
  out[threadIdx.x] = v;
}

__global__ void shuffle_in_branch(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_sync(kFull, v, 0);  // @branch-shuffle
  out[threadIdx.x] = v;
}

__global__ void shuffle_in_branch_then_barrier(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_sync(kFull, v, 0);  // @branch-shuffle-2
  __syncthreads();                                          // @branch-barrier
  out[threadIdx.x] = v;
}

__global__ void mask_omits_caller(int* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, static_cast<int>(threadIdx.x), 0);  // @omits
}

__global__ void reads_inactive_lane(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, v, threadIdx.x + 16);  // @inactive
  out[threadIdx.x] = v;
}

__global__ void different_collectives(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 2 == 0) {
    v = __shfl_sync(kFull, v, 0);  // @coll-a
  } else {
    v = __shfl_sync(kFull, v, 1);  // @coll-b
  }
  out[threadIdx.x] = v;
}

__global__ void dynamic_smem_overflow(int* out) {
  KDOPS_DYNAMIC_SMEM(int, s);
  s[threadIdx.x + 1] = static_cast<int>(threadIdx.x);  // @dyn-oob: the last thread writes past the end
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void dynamic_smem_in_bounds(int* out) {
  KDOPS_DYNAMIC_SMEM(int, s);
  s[(threadIdx.x + 1) % blockDim.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void static_smem_overflow(int* out) {
  __shared__ int s[64];
  s[threadIdx.x + 1] = static_cast<int>(threadIdx.x);  // @static-oob
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x % 64];
}

template <bool initialised>
__global__ void dynamic_smem_read(int* out) {
  KDOPS_DYNAMIC_SMEM(int, s);
  if (initialised) s[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

// Block maximum: `racy` does check-then-act on shared memory, the fix uses atomicMax.
template <bool racy>
__global__ void block_max(const int* in, int* out) {
  __shared__ int m;
  if (threadIdx.x == 0) m = INT32_MIN;
  __syncthreads();
  const int v = in[threadIdx.x];
  if (racy) {
    if (v > m) m = v;  // @race
  } else {
    atomicMax(&m, v);
  }
  __syncthreads();
  if (threadIdx.x == 0) *out = m;
}

#if !defined(KDOPS_SIM)  // nvcc: instantiate the templates so that their code is compiled
template __global__ void block_sum<256>(const float*, int, float*);
template __global__ void wmma_gemm<half>(const half*, const half*, float*, float);
template __global__ void wmma_gemm<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, float*, float);
template __global__ void reverse_block<true>(const int*, int*);
template __global__ void warp_sum_width<32>(const int*, int*);
template __global__ void dynamic_smem_read<true>(int*);
template __global__ void warp_exchange<true>(int*);
template __global__ void block_max<true>(const int*, int*);
template __global__ void block_max<false>(const int*, int*);
#endif
}  // namespace sim_cases

// ---------------------------------------------------------------- cases
#if defined(KDOPS_SIM)
namespace {

using kdops::sim::launch;
using namespace sim_cases;

void print_floats(const std::vector<float>& v) {
  for (float f : v) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    std::printf("%08x ", bits);
  }
  std::printf("\n");
}

template <typename T>
void print_ints(const std::vector<T>& v) {
  for (T x : v) std::printf("%lld ", static_cast<long long>(x));
  std::printf("\n");
}

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("MISMATCH: %s\n", what);
    std::exit(4);
  }
}

std::vector<float> test_data(int n) {  // small dyadic values: float sums of them are exact
  std::vector<float> x(n);
  uint64_t s = 12345;
  for (int i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = static_cast<float>(static_cast<int>((s >> 33) % 33) - 16) / 8.0f;
  }
  return x;
}


std::vector<float> run_block_sum() {
  const int n = 64 * 256 * 3 + 17;
  const std::vector<float> x = test_data(n);
  std::vector<float> partial(64);
  launch(block_sum<256>, dim3(64), dim3(256), 0, nullptr, x.data(), n, partial.data());
  return partial;
}

void case_block_sum() {
  const std::vector<float> partial = run_block_sum();
  const std::vector<float> x = test_data(64 * 256 * 3 + 17);
  for (int b = 0; b < 64; ++b) {
    double expected = 0;
    for (int i = b * 256; i < static_cast<int>(x.size()); i += 64 * 256) {
      for (int t = 0; t < 256 && i + t < static_cast<int>(x.size()); ++t) expected += x[i + t];
    }
    expect(partial[b] == static_cast<float>(expected), "block_sum partial");
  }
  print_floats(partial);
}

void case_grid_sum() {
  const int n = 100000;
  std::vector<int> x(n);
  long long expected = 0;
  for (int i = 0; i < n; ++i) expected += x[i] = (i * 7919) % 1001;
  std::vector<long long> partial(37);
  unsigned done = 0;
  long long total = -1;
  unsigned long long atomic_total = 0;
  launch(grid_sum, dim3(37), dim3(256), 0, nullptr, x.data(), n, partial.data(), &done, &total, &atomic_total);
  expect(total == expected, "grid_sum total");
  expect(atomic_total == static_cast<unsigned long long>(expected), "grid_sum atomics");
  expect(done == 0, "atomicInc wraps to 0");
  std::printf("%lld %llu\n", total, atomic_total);
}

void case_bitonic() {
  const int n = 1000;
  std::vector<int> keys(n);
  for (int i = 0; i < n; ++i) keys[i] = (i * 37) % 101;  // many ties
  std::vector<int> order(n, -1);
  launch(bitonic_argsort, dim3(1), dim3(512), 2 * 1024 * sizeof(int), nullptr, keys.data(), n, order.data());
  std::vector<int> expected(n);
  for (int i = 0; i < n; ++i) expected[i] = i;
  std::stable_sort(expected.begin(), expected.end(), [&](int a, int b) { return keys[a] > keys[b]; });
  expect(order == expected, "bitonic order");
  print_ints(order);
}

template <typename T>
void case_wmma() {
  std::vector<T> a(256), b(256);  // b column-major: b[col * 16 + row]
  std::vector<double> ad(256), bd(256);
  for (int i = 0; i < 256; ++i) {
    ad[i] = ((i * 13) % 17 - 8) / 4.0;  // exactly representable in fp16 and bf16
    bd[i] = ((i * 29) % 19 - 9) / 8.0;
    a[i] = T(static_cast<float>(ad[i]));
    b[i] = T(static_cast<float>(bd[i]));
  }
  std::vector<float> c(256, -1.0f);
  launch(wmma_gemm<T>, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data(), 2.0f);
  for (int r = 0; r < 16; ++r) {
    for (int col = 0; col < 16; ++col) {
      double exact = 0;
      for (int k = 0; k < 16; ++k) exact += ad[r * 16 + k] * bd[col * 16 + k];
      expect(c[r * 16 + col] == static_cast<float>(2 * exact), "wmma product");
    }
  }
  print_floats(c);
}

void case_wmma_s8() {
  std::vector<signed char> a(256), b(256);
  std::vector<int> c(256), c0(256);
  for (int i = 0; i < 256; ++i) {
    a[i] = static_cast<signed char>((i * 37) % 255 - 127);
    b[i] = static_cast<signed char>((i * 91) % 255 - 127);
    c[i] = c0[i] = (i * 1000003) % 20000000 - 10000000;  // beyond float's exact integers
  }
  launch(wmma_s8, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data());
  for (int r = 0; r < 16; ++r) {
    for (int col = 0; col < 16; ++col) {
      long long exact = c0[col * 16 + r];
      for (int k = 0; k < 16; ++k) exact += a[r * 16 + k] * b[k * 16 + col];
      expect(c[r * 16 + col] == exact, "s8 product");
    }
  }
  print_ints(c);
}

void case_wmma_tf32() {
  // Odd multiples of 1/8 plus 2^-16, which rounding to tf32 removes: the product is then exact.
  std::vector<float> a(128), b(128);
  std::vector<double> ad(128), bd(128);
  for (int i = 0; i < 128; ++i) {
    ad[i] = (2 * ((i * 5) % 9) - 9) / 8.0;
    bd[i] = (2 * ((i * 7) % 11) - 11) / 8.0;
    a[i] = static_cast<float>(ad[i] + std::ldexp(1.0, -16));
    b[i] = static_cast<float>(bd[i] + std::ldexp(1.0, -16));
  }
  std::vector<float> c(256);
  launch(wmma_tf32, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data());
  for (int r = 0; r < 16; ++r) {
    for (int col = 0; col < 16; ++col) {
      double exact = 0;
      for (int k = 0; k < 8; ++k) exact += ad[r * 8 + k] * bd[k * 16 + col];
      expect(c[r * 16 + col] == static_cast<float>(exact), "tf32 product");
    }
  }
  expect(nvcuda::wmma::__float_to_tf32(1.0f + std::ldexp(1.0f, -11)) == 1.0f + std::ldexp(1.0f, -10),
         "__float_to_tf32 rounds ties away from zero");
  expect(nvcuda::wmma::__float_to_tf32(-(1.0f + std::ldexp(1.0f, -12))) == -1.0f, "__float_to_tf32 rounds to nearest");
  print_floats(c);
}

void case_wmma_lane_edit() {
  std::vector<half> a(256, half(1.0f)), b(256, half(1.0f));
  std::vector<float> c(256);
  launch(wmma_lane_edit, dim3(1), dim3(64), 0, nullptr, a.data(), b.data(), c.data());
}

template <bool synced>
void case_wmma_store_then_read() {
  std::vector<float> out(32, 0.0f);
  launch(wmma_store_then_read<synced>, dim3(1), dim3(32), 0, nullptr, out.data());
  for (float v : out) std::printf("%g ", v);
  std::printf("\n");
}

template <bool synced>
void case_reverse() {
  const int blocks = 4, threads = 128;
  std::vector<int> in(blocks * threads), out(blocks * threads, 0);
  for (int i = 0; i < blocks * threads; ++i) in[i] = i;
  launch(reverse_block<synced>, dim3(blocks), dim3(threads), 0, nullptr, in.data(), out.data());
  bool matches = true;
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < threads; ++t) matches &= out[b * threads + t] == in[b * threads + threads - 1 - t];
  }
  std::printf("%s\n", matches ? "reference" : "differs");
  print_ints(out);
}

template <bool waited>
void case_async_copy_reverse() {
  const int blocks = 2;
  std::vector<int> in(blocks * 256), out(blocks * 256, 0);
  for (int i = 0; i < blocks * 256; ++i) in[i] = 3 * i + 1;
  launch(async_copy_reverse<waited>, dim3(blocks), dim3(64), 0, nullptr, reinterpret_cast<const int4*>(in.data()),
         reinterpret_cast<int4*>(out.data()));
  bool matches = true;
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < 64; ++t) {
      for (int e = 0; e < 4; ++e) matches &= out[(b * 64 + t) * 4 + e] == in[(b * 64 + 63 - t) * 4 + e];
    }
  }
  std::printf("%s\n", matches ? "reference" : "differs");
  print_ints(out);
}

template <int kInFlight>
void case_async_copy_pipeline() {
  const int tiles = 5;
  std::vector<int> in(tiles * 64), out(64, 0);
  for (int i = 0; i < tiles * 64; ++i) in[i] = i % 7 + i / 64;
  launch(async_copy_pipeline<kInFlight>, dim3(1), dim3(64), 0, nullptr, in.data(), tiles, out.data());
  bool matches = true;
  for (int t0 = 0; t0 < 64; ++t0) {
    int expected = 0;
    for (int t = 0; t < tiles; ++t) expected += in[t * 64 + 63 - t0];
    matches &= out[t0] == expected;
  }
  std::printf("%s\n", matches ? "reference" : "differs");
  print_ints(out);
}

template <bool synced>
void case_warp_exchange() {
  std::vector<int> out(128);
  launch(warp_exchange<synced>, dim3(2), dim3(64), 0, nullptr, out.data());
  bool matches = true;
  for (int t = 0; t < 128; ++t) matches &= out[t] == (t % 64 / 32 * 32 + (t % 32 + 1) % 32) * 3;
  std::printf("%s\n", matches ? "reference" : "differs");
  print_ints(out);
}

void case_layout() {
  const dim3 grid(3, 2), block(8, 4, 2);
  const unsigned n = 64, blocks = 6;
  std::vector<unsigned> out(blocks * n + blocks);
  launch(layout, grid, block, 0, nullptr, out.data());
  for (unsigned b = 0; b < blocks; ++b) {
    expect(out[blocks * n + b] == (((b / 3) << 8) | (b % 3)), "blockIdx");
    for (unsigned t = 0; t < n; ++t) {
      expect(out[b * n + t] == (((t / 32) << 16) | ((t / 8 % 4) << 8) | (t % 8)), "threadIdx");
    }
  }
  print_ints(out);
}

void case_votes() {
  const int threads = 64;
  std::vector<int> out(threads * 12);
  launch(votes, dim3(1), dim3(threads), 0, nullptr, out.data());
  for (int t = 0; t < threads; ++t) {
    const int lane = t % 32;
    const int* o = &out[t * 12];
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 5) ballot |= 1u << l;
    expect(o[0] == 22 && o[1] == 1 && o[2] == 1, "__syncthreads_count/and/or");
    expect(static_cast<unsigned>(o[3]) == ballot && o[4] == 1 && o[5] == 0, "ballot/any/all");
    expect(o[6] == 496, "__reduce_add_sync");
    expect(o[7] == (lane % 8 < 3 ? lane : lane - 3), "__shfl_up_sync width 8");
    expect(o[8] == (lane % 16 >= 11 ? lane : lane + 5), "__shfl_down_sync width 16");
    expect(o[9] == (lane / 4 * 4 + 1) * 10, "__shfl_sync width 4");
    expect(o[10] == (lane < 16 ? (lane ^ 1) : -1), "__shfl_xor_sync on half a warp");
    expect(static_cast<unsigned>(o[11]) == kFull, "__activemask before any lane exits");
  }
  print_ints(out);
}

template <int kWidth>
void case_warp_sum() {
  std::vector<int> in(32), out(32);
  for (int i = 0; i < 32; ++i) in[i] = i * i;
  launch(warp_sum_width<kWidth>, dim3(1), dim3(32), 0, nullptr, in.data(), out.data());
  int expected = 0;
  for (int v : in) expected += v;
  bool all = true;
  for (int v : out) all &= v == expected;
  std::printf("%s\n", all ? "reference" : "differs");
  print_ints(out);
}

void launch_ints(void (*kernel)(int*), int threads, size_t smem = 0) {
  std::vector<int> out(threads, 0);
  launch(kernel, dim3(2), dim3(threads), smem, nullptr, out.data());
  print_ints(out);
}

template <bool racy>
void case_block_max() {
  std::vector<int> in(256);
  for (int i = 0; i < 256; ++i) in[i] = (i * 7919) % 1000;
  int out = 0;
  launch(block_max<racy>, dim3(1), dim3(256), 0, nullptr, in.data(), &out);
  std::printf("%d\n", out);
}

void case_launch_checks() {
  std::vector<int> out(2048);
  auto error_of = [&](std::function<void()> f) -> std::string {
    try {
      f();
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  expect(error_of([&] { launch(dynamic_smem_in_bounds, dim3(1), dim3(1025), 0, nullptr, out.data()); })
                 .find("invalid configuration") != std::string::npos,
         "1025 threads rejected");
  expect(error_of([&] { launch(dynamic_smem_in_bounds, dim3(0), dim3(32), 0, nullptr, out.data()); })
                 .find("invalid configuration") != std::string::npos,
         "empty grid rejected");
  expect(error_of([&] { launch(dynamic_smem_in_bounds, dim3(1, 65536), dim3(32), 0, nullptr, out.data()); })
                 .find("invalid configuration") != std::string::npos,
         "grid.y > 65535 rejected");
  const size_t big = 64 * 1024;
  expect(error_of([&] { launch(dynamic_smem_in_bounds, dim3(1), dim3(32), big, nullptr, out.data()); })
                 .find("dynamic shared memory") != std::string::npos,
         "64 KiB without opting in rejected");
  expect(cudaFuncSetAttribute(dynamic_smem_in_bounds, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
             cudaErrorInvalidValue,
         "opt-in above the H100's 227 KiB rejected");
  expect(cudaGetLastError() == cudaErrorInvalidValue && cudaGetLastError() == cudaSuccess, "last error read once");
  expect(cudaFuncSetAttribute(dynamic_smem_in_bounds, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(big)) ==
             cudaSuccess,
         "opt-in to 64 KiB");
  launch(dynamic_smem_in_bounds, dim3(1), dim3(32), big, nullptr, out.data());
  expect(out[0] == 31 && out[1] == 0, "64 KiB launch after opting in");
  expect(error_of([&] { __syncthreads(); }).find("outside a kernel") != std::string::npos,
         "__syncthreads on the host rejected");
  expect(error_of([&] { launch(launches_a_kernel, dim3(1), dim3(32), 0, nullptr, out.data()); })
                 .find("launched another kernel") != std::string::npos,
         "device-side launch rejected");
  launch(dynamic_smem_in_bounds, dim3(1), dim3(32), big, nullptr, out.data());  // still usable
  kdops::sim::set_device(kdops::sim::small_device());
  expect(kdops::sim::device().multiProcessorCount == 2, "small device selected");
  expect(error_of([&] { launch(dynamic_smem_in_bounds, dim3(1), dim3(32), big, nullptr, out.data()); })
                 .find("dynamic shared memory") != std::string::npos,
         "64 KiB over the small device's opt-in limit");
  kdops::sim::set_device(kdops::sim::h100());
  expect(kdops::sim::device().multiProcessorCount == 132, "H100 selected");
  std::printf("ok\n");
}

// An error leaves the runtime usable, on this OS thread and on others launching at once.
// A kernel's memory fault fails its launch with a message; the next launch runs as usual.
void case_fault_then_recover() {
  std::vector<int> out(64, 0);
  try {
    launch(wild_read, dim3(2), dim3(64), 0, nullptr, out.data());
    std::printf("no fault\n");
  } catch (const std::runtime_error& e) {
    std::printf("FAULT: %s\n", e.what());
  }
  case_reverse<true>();
}

// A buffer of the simulator's guarded heap (csrc/sim/guarded_heap.h) written one element past
// its end: the launch fails; the next launch on the same buffer, within bounds, runs clean.
void case_write_past_end() {
  int* data = static_cast<int*>(kdops::sim::guarded_allocate(10 * sizeof(int)));
  try {
    launch(write_past_end, dim3(1), dim3(32), 0, nullptr, Output{data, 10});
    std::printf("no error\n");
  } catch (const std::runtime_error& e) {
    std::printf("ERROR: %s\n", e.what());
  }
  launch(write_past_end, dim3(1), dim3(32), 0, nullptr, Output{data, 9});
  std::printf("then clean\n");
  kdops::sim::guarded_free(data);
}

void case_recover_and_threads() {
  std::vector<int> out(64);
  bool raised = false;
  try {
    launch(divergent_barrier, dim3(1), dim3(64), 0, nullptr, out.data());
  } catch (const std::runtime_error&) {
    raised = true;
  }
  expect(raised, "divergent barrier raised");
  const std::vector<float> single = run_block_sum();
  std::vector<std::vector<float>> results(2);
  std::thread other([&] { results[1] = run_block_sum(); });
  results[0] = run_block_sum();
  other.join();
  expect(results[0] == single && results[1] == single, "same sums on two OS threads at once");
  std::printf("ok\n");
}

__attribute__((target("f16c"))) uint16_t f16c_float_to_half(float f) {
  return static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

// Half and bfloat16 conversions against the CPU's own float->half instruction (F16C), which
// rounds to nearest even as CUDA does, and against the bfloat16 rounding formula.
void case_conversions() {
  uint64_t s = 1;
  int checked = 0;
  auto check = [&](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    const uint16_t expected_half = std::isnan(f) ? 0x7fff : f16c_float_to_half(f);
    expect(__half_as_ushort(__float2half(f)) == expected_half, "__float2half bits");
    const uint16_t expected_bf16 =
        std::isnan(f) ? 0x7fff : static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
    expect(__bfloat16_as_ushort(__float2bfloat16(f)) == expected_bf16, "__float2bfloat16 bits");
    // widening is exact: back and forth reproduces the 16-bit value
    const float h = __half2float(__float2half(f));
    expect(std::isnan(f) ? std::isnan(h) : __half_as_ushort(__float2half(h)) == expected_half, "__half2float");
    const float bf = __bfloat162float(__float2bfloat16(f));
    expect(std::isnan(f) ? std::isnan(bf) : __bfloat16_as_ushort(__float2bfloat16(bf)) == expected_bf16,
           "__bfloat162float");
    ++checked;
  };
  for (uint32_t e = 0; e < 256; ++e) {  // every exponent, mantissas near rounding boundaries
    for (uint32_t m : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x2000u, 0x3000u, 0x7fffu, 0x8000u, 0x8001u, 0x18000u,
                       0x7fffffu, 0x7fe000u, 0x7ff000u}) {
      check((e << 23) | m);
      check(0x80000000u | (e << 23) | m);
    }
  }
  for (int i = 0; i < 2000000; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    check(static_cast<uint32_t>(s >> 32));
  }
  std::printf("ok %d\n", checked);
}

}  // namespace

int main(int argc, char** argv) {
  if (!set_schedule_from_args(argc, argv)) return 2;
  const std::string name = argv[1];

  const std::map<std::string, std::function<void()>> cases = {
      {"block_sum", case_block_sum},
      {"grid_sum", case_grid_sum},
      {"bitonic", case_bitonic},
      {"wmma_half", case_wmma<half>},
      {"wmma_bf16", case_wmma<__nv_bfloat16>},
      {"wmma_tf32", case_wmma_tf32},
      {"wmma_s8", case_wmma_s8},
      {"layout", case_layout},
      {"votes", case_votes},
      {"reverse_synced", case_reverse<true>},
      {"warp_exchange_synced", case_warp_exchange<true>},
      {"warp_exchange_racy", case_warp_exchange<false>},
      {"reverse_missing_barrier", case_reverse<false>},
      {"async_copy_waited", case_async_copy_reverse<true>},
      {"async_copy_unwaited", case_async_copy_reverse<false>},
      {"async_copy_pipeline", case_async_copy_pipeline<1>},
      {"async_copy_pipeline_waits_too_little", case_async_copy_pipeline<2>},
      {"warp_sum_width32", case_warp_sum<32>},
      {"warp_sum_width16", case_warp_sum<16>},
      {"warp_sum_width24", case_warp_sum<24>},
      {"divergent_barrier", [] { launch_ints(divergent_barrier, 64); }},
      {"exit_before_barrier", [] { launch_ints(exit_before_barrier, 64); }},
      {"shuffle_in_branch", [] { launch_ints(shuffle_in_branch, 64); }},
      {"shuffle_in_branch_then_barrier", [] { launch_ints(shuffle_in_branch_then_barrier, 64); }},
      {"mask_omits_caller", [] { launch_ints(mask_omits_caller, 32); }},
      {"reads_inactive_lane", [] { launch_ints(reads_inactive_lane, 32); }},
      {"different_collectives", [] { launch_ints(different_collectives, 32); }},
      {"wmma_lane_edit", case_wmma_lane_edit},
      {"dynamic_smem_overflow", [] { launch_ints(dynamic_smem_overflow, 64, 64 * sizeof(int)); }},
      {"dynamic_smem_in_bounds", [] { launch_ints(dynamic_smem_in_bounds, 64, 64 * sizeof(int)); }},
      {"static_smem_overflow", [] { launch_ints(static_smem_overflow, 64); }},
      {"dynamic_smem_uninitialised", [] { launch_ints(dynamic_smem_read<false>, 64, 64 * sizeof(int)); }},
      {"dynamic_smem_initialised", [] { launch_ints(dynamic_smem_read<true>, 64, 64 * sizeof(int)); }},
      {"block_max_racy", case_block_max<true>},
      {"block_max_atomic", case_block_max<false>},
      {"launch_checks", case_launch_checks},
      {"recover_and_threads", case_recover_and_threads},
      {"fault_then_recover", case_fault_then_recover},
      {"write_past_end", case_write_past_end},
      {"wmma_store_then_read_synced", case_wmma_store_then_read<true>},
      {"wmma_store_then_read_racy", case_wmma_store_then_read<false>},
      {"static_smem_read_first", [] { launch_ints(static_smem_read_first, 64); }},
      {"conversions", case_conversions},
  };
  return run_case(cases, name);
}
#endif
