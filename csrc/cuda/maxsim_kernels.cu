// MaxSim CUDA kernels. Math and layouts: common/maxsim.h, shared with the CPU kernels.
//
// Forward, fp16/bf16: on tensor cores by mma.sync (maxsim_mma.cuh); fp32 when
// torch.backends.cuda.matmul.allow_tf32 is set: by WMMA on TF32 (maxsim_tensor_core.cuh). fp64,
// and fp32 without that flag (exact): one
// block per (query, column) pair (grid-stride). The block loads kTile query tokens into shared
// memory, streams the doc's tokens through shared memory kTile at a time (both in chunks of
// features when d is wider than shared memory holds: any d runs), and each thread keeps
// the running max (and first argmax) of one query token over its share of the doc tokens; the
// kSplit threads of a query token then merge their maxima with warp shuffles. Accumulation is in
// acc_t (fp32 for half inputs). No similarity tensor is written. Both forward kernels take a
// compile-time kWriteArgmax: inference (with_argmax = false) runs a twin that stores no index.
//
// Backward, from the saved argmax, deterministic (no atomics, fixed summation order):
//   dQ: lanes own a query token row's features, loads of D rows in flight, the columns k added in
//       order (maxsim_query_grad.cuh).
//   dD: warps own doc rows and gather their contributions in entry order, hot rows split into
//       fixed parts added in a fixed order (maxsim_doc_grad.cuh).
//
// Which forward runs for a dtype, and the ops around the kernels: maxsim_cuda.cpp.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "cuda/block_reduce.cuh"
#include "cuda/launch.cuh"
#include "cuda/maxsim_doc_grad.cuh"
#include "cuda/maxsim_kernels.h"
#include "cuda/maxsim_mma.cuh"
#include "cuda/maxsim_query_grad.cuh"
#include "cuda/maxsim_tensor_core.cuh"
#include "cuda/smem_limit.h"
#include "sim/portable.h"

namespace kdops::cuda::tensor_core::mma {

// The scores of a split launch: scores[p] = the sum of partial[c][p] over chunks c in order, from
// 0, as maxsim_mma_kernel adds its chunks' sums when it takes them all (no atomics: one thread a
// score). Defined here, not in maxsim_mma.cuh, which the serving kernels include too: a
// non-template kernel in a header would be defined once per file that includes it.
__global__ void __launch_bounds__(kSumThreads)
    maxsim_chunk_sum_kernel(const float* partial, int chunks, int64_t pairs, float* scores) {
  for (int64_t p = blockIdx.x * int64_t(kSumThreads) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * kSumThreads) {
    float score = 0;
    for (int c = 0; c < chunks; ++c) score += partial[c * pairs + p];
    scores[p] = score;
  }
}

}  // namespace kdops::cuda::tensor_core::mma

namespace kdops::cuda::maxsim {
namespace {

constexpr int kTile = 32;                   // query tokens and doc tokens per shared-memory tile
constexpr int kSplit = 8;                   // threads sharing one query token (divides 32)
constexpr int kThreads = kTile * kSplit;    // 256

// Shared-memory rows are padded by one element so the kSplit threads reading different doc
// tokens at the same feature hit different banks.
KDOPS_HD int64_t padded_dim(int64_t dim) { return dim + 1; }

// Copies features [c0, c0 + width) of rows [first, first + count) of a [*, dim] matrix into
// tile (row stride width + 1) as acc_t, zero-filling up to kTile rows.
template <typename scalar_t, typename acc_t>
__device__ void load_tile(const scalar_t* src, int64_t first, int64_t count, int64_t dim, int64_t c0,
                          int64_t width, acc_t* tile) {
  const int64_t stride = padded_dim(width);
  for (int64_t e = threadIdx.x; e < kTile * width; e += kThreads) {
    const int64_t r = e / width, c = e - r * width;
    tile[r * stride + c] = r < count ? static_cast<acc_t>(src[(first + r) * dim + c0 + c]) : acc_t(0);
  }
}

constexpr int kTokensPerThread = kTile / kSplit;

// Adds to sims the products over the tiles' width features of one query token row with this
// thread's doc tokens part, part + kSplit, ... of the tile: each query feature is read once from
// shared memory for all of them. Called once per feature chunk, in feature order, each sim is
// the same sum, in the same order, whatever the chunks.
template <typename acc_t>
__device__ void dot_tile_rows(const acc_t* q_row, const acc_t* d_tile, int part, int64_t width,
                              acc_t (&sims)[kTokensPerThread]) {
  const int64_t stride = padded_dim(width);
  for (int64_t c = 0; c < width; ++c) {
    const acc_t qc = q_row[c];
#pragma unroll
    for (int u = 0; u < kTokensPerThread; ++u) sims[u] += qc * d_tile[(part + u * kSplit) * stride + c];
  }
}

// chunk: the features a shared-memory tile holds (simt_forward: all d when they fit, else the
// most that do). With one chunk the query tile is loaded once per kTile query tokens; with more,
// each doc tile pass reloads the query tile's chunk beside the doc tile's.
template <typename scalar_t, typename acc_t, bool kWriteArgmax>
__global__ void __launch_bounds__(kThreads)
    maxsim_forward_kernel(MaxSimView<scalar_t> v, int64_t chunk, acc_t* scores, int32_t* argmax) {
  KDOPS_DYNAMIC_SMEM(unsigned char, smem_raw);
  acc_t* q_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* d_tile = q_tile + kTile * padded_dim(chunk);
  const MaxSimLayout& l = v.layout;
  const int row = threadIdx.x / kSplit, part = threadIdx.x % kSplit;
  const bool one_chunk = chunk >= v.dim;
  for (int64_t pair = blockIdx.x; pair < v.Nq * l.K; pair += gridDim.x) {
    const int64_t q = pair / l.K, k = pair - q * l.K;
    const int64_t doc = l.doc(q, k), start = l.start(doc), length = l.length(doc);
    acc_t score = 0;  // this thread's query tokens' contributions (part 0 only)
    for (int64_t i0 = 0; i0 < v.Lq; i0 += kTile) {
      const int64_t q_rows = std::min<int64_t>(kTile, v.Lq - i0);
      __syncthreads();  // the previous tiles are no longer read
      if (one_chunk) load_tile(v.Q + q * v.Lq * v.dim, i0, q_rows, v.dim, 0, v.dim, q_tile);
      RunningMax<acc_t> m = empty_running_max<acc_t>();
      for (int64_t j0 = 0; j0 < length; j0 += kTile) {
        acc_t sims[kTokensPerThread];
#pragma unroll
        for (int u = 0; u < kTokensPerThread; ++u) sims[u] = 0;
        for (int64_t c0 = 0; c0 < v.dim; c0 += chunk) {
          const int64_t width = std::min<int64_t>(chunk, v.dim - c0);
          __syncthreads();
          if (!one_chunk) load_tile(v.Q + q * v.Lq * v.dim, i0, q_rows, v.dim, c0, width, q_tile);
          load_tile(v.D, start + j0, std::min<int64_t>(kTile, length - j0), v.dim, c0, width, d_tile);
          __syncthreads();
          // Rows past the doc's end are zero-filled: their similarities are computed and dropped.
          dot_tile_rows(q_tile + row * padded_dim(width), d_tile, part, width, sims);
        }
        // Each thread visits its doc tokens in increasing j: update keeps the first maximum.
#pragma unroll
        for (int u = 0; u < kTokensPerThread; ++u) {
          const int64_t j = j0 + part + u * kSplit;
          if (j < length && v.doc_token_valid(start + j)) m.update(sims[u], static_cast<int32_t>(j));
        }
      }
      // Merge the kSplit partial maxima of each query token (consecutive lanes of one warp).
      for (int offset = kSplit / 2; offset > 0; offset /= 2) {
        const acc_t other_value = __shfl_down_sync(0xffffffffu, m.value, offset, kSplit);
        const int32_t other_index = __shfl_down_sync(0xffffffffu, m.index, offset, kSplit);
        m.merge(other_value, other_index);
      }
      const int64_t i = i0 + row;
      if (part == 0 && i < v.Lq) {
        if (!v.query_token_valid(q, i)) m.index = -1;
        if constexpr (kWriteArgmax) argmax[v.argmax_index(q, k, i)] = m.index;
        score += m.contribution();
      }
    }
    // Fixed-shape block reduction: the sum does not depend on scheduling.
    score = block_sum<kThreads>(score);
    if (threadIdx.x == 0) scores[pair] = score;
  }
}

int blocks_for(int64_t n, int64_t sms) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n, sms * 32)));
}

}  // namespace

// The tensor-core forward of a dtype: mma.sync for fp16/bf16, WMMA (TF32) for fp32. Each gives
// its kernel, block size, dynamic shared memory, staged element type, its work split, and its
// launch (partial: the split's partial sums, nullptr when groups.splits == 1).
template <typename scalar_t, bool kWriteArgmax>
struct TensorCoreForward {
  static constexpr auto kernel = tensor_core::mma::maxsim_mma_kernel<scalar_t, kWriteArgmax>;
  static constexpr int kThreads = tensor_core::mma::kThreads;
  using stored = uint16_t;
  static int64_t smem_bytes(int64_t dim) { return tensor_core::mma::smem_bytes(dim); }
  static tensor_core::Groups groups(const MaxSimView<scalar_t>& v, int64_t sms) {
    return tensor_core::split_chunks(tensor_core::groups_for(v.Nq, v.Lq, v.layout), sms, tensor_core::mma::kMinBlocks);
  }
  static void launch(const MaxSimView<scalar_t>& v, const tensor_core::Groups& groups, bool vec, float* scores,
                     int32_t* argmax, float* partial, LaunchTarget on) {
    const int blocks = static_cast<int>(std::min<int64_t>(groups.blocks(), int64_t(1) << 30));
    kdops::cuda::launch(kernel, blocks, kThreads, smem_bytes(v.dim), on.stream, v, groups, vec, scores, argmax,
                        partial);
    if (partial == nullptr) return;
    const int64_t pairs = v.Nq * v.layout.K;
    const int sum_blocks = static_cast<int>(std::min<int64_t>((pairs + tensor_core::mma::kSumThreads - 1) /
                                                                  tensor_core::mma::kSumThreads, on.sms * 32));
    kdops::cuda::launch(tensor_core::mma::maxsim_chunk_sum_kernel, sum_blocks, tensor_core::mma::kSumThreads, 0,
                        on.stream, partial, groups.chunks, pairs, scores);
  }
};
template <bool kWriteArgmax>
struct TensorCoreForward<float, kWriteArgmax> {
  static constexpr auto kernel = tensor_core::maxsim_tensor_core_kernel<float, kWriteArgmax>;
  static constexpr int kThreads = tensor_core::kThreads;
  using stored = float;
  static int64_t smem_bytes(int64_t dim) { return tensor_core::smem_bytes(dim, sizeof(float)); }
  // One block per item, its chunks in series (the TF32 kernel does not split).
  static tensor_core::Groups groups(const MaxSimView<float>& v, int64_t) {
    return tensor_core::groups_for(v.Nq, v.Lq, v.layout);
  }
  static void launch(const MaxSimView<float>& v, const tensor_core::Groups& groups, bool vec, float* scores,
                     int32_t* argmax, float*, LaunchTarget on) {
    const int blocks = static_cast<int>(std::min<int64_t>(groups.items, int64_t(1) << 30));
    kdops::cuda::launch(kernel, blocks, kThreads, smem_bytes(v.dim), on.stream, v, groups, vec, scores, argmax);
  }
};

template <typename scalar_t, bool kWriteArgmax>
bool tensor_core_fits(int64_t dim) {
  using F = TensorCoreForward<scalar_t, kWriteArgmax>;
  return F::smem_bytes(dim) <= dynamic_shared_memory_limit<F::kernel>();
}

template <typename scalar_t, bool kWriteArgmax>
int64_t tensor_core_partials(const MaxSimView<scalar_t>& v, int64_t sms) {
  const tensor_core::Groups groups = TensorCoreForward<scalar_t, kWriteArgmax>::groups(v, sms);
  return groups.splits > 1 ? groups.chunks * v.Nq * v.layout.K : 0;
}

template <typename scalar_t, bool kWriteArgmax>
void tensor_core_forward(const MaxSimView<scalar_t>& v, float* scores, int32_t* argmax, float* partial,
                         LaunchTarget on) {
  using F = TensorCoreForward<scalar_t, kWriteArgmax>;
  TORCH_INTERNAL_ASSERT(F::smem_bytes(v.dim) <= dynamic_shared_memory_limit<F::kernel>(),
                        "callers check tensor_core_fits");
  const tensor_core::Groups groups = F::groups(v, on.sms);
  TORCH_INTERNAL_ASSERT((groups.splits > 1) == (partial != nullptr), "partial: tensor_core_partials floats");
  const bool vec = tensor_core::vector_loads<typename F::stored>(v.dim, v.Q, v.D);
  F::launch(v, groups, vec, scores, argmax, partial, on);
}

template <typename scalar_t, typename acc_t, bool kWriteArgmax>
void simt_forward(const MaxSimView<scalar_t>& v, acc_t* scores, int32_t* argmax, LaunchTarget on) {
  constexpr auto kernel = maxsim_forward_kernel<scalar_t, acc_t, kWriteArgmax>;
  // Two tiles of kTile rows of chunk + 1 acc_t: every d when they fit, else the widest chunk
  // that does (any d runs; a shared-memory opt-in of 48 KiB or more holds chunks of >= 95).
  const int64_t row_bytes = 2 * kTile * int64_t(sizeof(acc_t)), limit = dynamic_shared_memory_limit<kernel>();
  const int64_t chunk = std::min<int64_t>(v.dim, limit / row_bytes - 1);
  TORCH_CHECK(chunk >= 1, "kdops.maxsim: the device's shared memory (", limit, " bytes) holds no tile");
  launch(kernel, blocks_for(v.Nq * v.layout.K, on.sms), kThreads, row_bytes * padded_dim(chunk), on.stream, v,
         chunk, scores, argmax);
}

template <typename scalar_t, typename acc_t>
void query_gradient(const MaxSimView<scalar_t>& v, const acc_t* w, const int32_t* argmax, scalar_t* dQ,
                LaunchTarget on) {
  namespace qg = query_grad;
  constexpr int kVec = 16 / sizeof(scalar_t);
  const bool vec = tensor_core::vector_loads<scalar_t>(v.dim, v.D, dQ);
  const int G = qg::lanes_per_row(v.dim, vec ? kVec : 1);
  const int64_t rows_per_block = int64_t(qg::kWarps) * (32 / G);
  const int blocks = blocks_for((v.Nq * v.Lq + rows_per_block - 1) / rows_per_block, on.sms);
  if (vec) {
    launch(qg::maxsim_query_grad_kernel<scalar_t, acc_t, kVec>, blocks, qg::kThreads, 0, on.stream, v, G, w, argmax, dQ);
  } else {
    launch(qg::maxsim_query_grad_kernel<scalar_t, acc_t, 1>, blocks, qg::kThreads, 0, on.stream, v, G, w, argmax, dQ);
  }
}

int64_t doc_grad_slices(const MaxSimLayout& l, int64_t Nq, int64_t Lq) { return doc_grad::slices_for(l, Nq, Lq); }
int64_t doc_grad_slot_rows(const MaxSimLayout& l, int64_t Nq, int64_t Lq) {
  return l.num_docs * doc_grad::hot_groups_per_doc(l, Nq, Lq) * doc_grad::kRowsPerWarp;
}

template <typename scalar_t, typename acc_t>
void doc_gradient(const MaxSimView<scalar_t>& v, int64_t total_tokens, const acc_t* w, const int32_t* argmax,
                  DocGradScratch<acc_t> scratch, scalar_t* dD, LaunchTarget on) {
  const int64_t tiles = doc_grad::row_tiles(v.layout, total_tokens), items = v.layout.num_docs * tiles;
  if (scratch.slices > 1) {
    launch(doc_grad::maxsim_count_hits_kernel<scalar_t>, blocks_for((v.Nq * v.layout.K * v.Lq + 255) / 256, on.sms),
           256, 0, on.stream, v, argmax, scratch.counts);
  }
  const int64_t hot_per_doc = scratch.slices > 1 ? doc_grad::hot_groups_per_doc(v.layout, v.Nq, v.Lq) : 0;
  launch(doc_grad::maxsim_doc_grad_kernel<scalar_t, acc_t>, blocks_for(items * scratch.slices, on.sms),
         doc_grad::kThreads, 0, on.stream, v, tiles, scratch.slices, hot_per_doc, w, argmax, scratch.counts,
         scratch.rows_of, dD, scratch.partial);
  if (scratch.slices > 1) {
    const int64_t slot_rows = v.layout.num_docs * hot_per_doc * doc_grad::kRowsPerWarp;
    launch(doc_grad::maxsim_doc_grad_combine_kernel<scalar_t, acc_t>,
           blocks_for((slot_rows + doc_grad::kWarps - 1) / doc_grad::kWarps, on.sms), doc_grad::kThreads, 0,
           on.stream, slot_rows, v.dim, scratch.slices, scratch.rows_of, scratch.partial, dD);
  }
}

// Tensor cores: fp16, bf16 (mma.sync), fp32 (TF32). SIMT: every dtype (fp16/bf16 where d is too wide for the
// tensor-core tiles). Gradients: every dtype.
#define KDOPS_INSTANTIATE_TENSOR_CORE_ARGMAX(scalar_t, write)                                                 \
  template void tensor_core_forward<scalar_t, write>(const MaxSimView<scalar_t>&, float*, int32_t*, float*,   \
                                                     LaunchTarget);                                           \
  template int64_t tensor_core_partials<scalar_t, write>(const MaxSimView<scalar_t>&, int64_t);               \
  template bool tensor_core_fits<scalar_t, write>(int64_t);
#define KDOPS_INSTANTIATE_TENSOR_CORE(scalar_t)        \
  KDOPS_INSTANTIATE_TENSOR_CORE_ARGMAX(scalar_t, true) \
  KDOPS_INSTANTIATE_TENSOR_CORE_ARGMAX(scalar_t, false)
KDOPS_INSTANTIATE_TENSOR_CORE(c10::Half)
KDOPS_INSTANTIATE_TENSOR_CORE(c10::BFloat16)
KDOPS_INSTANTIATE_TENSOR_CORE(float)
#define KDOPS_INSTANTIATE_SIMT(scalar_t, acc_t)                                                           \
  template void simt_forward<scalar_t, acc_t, true>(const MaxSimView<scalar_t>&, acc_t*, int32_t*, LaunchTarget); \
  template void simt_forward<scalar_t, acc_t, false>(const MaxSimView<scalar_t>&, acc_t*, int32_t*, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE_SIMT)
#undef KDOPS_INSTANTIATE_SIMT
#define KDOPS_INSTANTIATE_GRADS(scalar_t, acc_t)                                                             \
  template void query_gradient<scalar_t, acc_t>(const MaxSimView<scalar_t>&, const acc_t*, const int32_t*,  \
                                            scalar_t*, LaunchTarget);                                       \
  template void doc_gradient<scalar_t, acc_t>(const MaxSimView<scalar_t>&, int64_t, const acc_t*, const int32_t*, \
                                              DocGradScratch<acc_t>, scalar_t*, LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE_GRADS)
#undef KDOPS_INSTANTIATE_GRADS
#undef KDOPS_INSTANTIATE_TENSOR_CORE
#undef KDOPS_INSTANTIATE_TENSOR_CORE_ARGMAX

}  // namespace kdops::cuda::maxsim
