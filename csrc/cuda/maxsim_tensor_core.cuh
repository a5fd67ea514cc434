// MaxSim forward on TF32 tensor cores, for fp32 inputs when the caller allows TF32
// (torch.backends.cuda.matmul.allow_tf32): score(q, k) = sum_i max_j <Q[q, i], D_k[j]>
// (common/maxsim.h), the similarities computed by WMMA m16n16k8 on TF32 operands (each input
// rounded to TF32's 10-bit mantissa once, as it is staged; products and sums in fp32) and never
// written to global memory. fp16/bf16 take mma.sync instead (maxsim_mma.cuh).
//
// Work split: maxsim_groups.cuh (a doc and a group of whole queries per block, kRows query rows).
// The doc streams through shared memory kCols tokens at a time; each warp
// multiplies a 16-row strip of the queries with the tile, stores its 16 x kCols fp32 similarities
// to shared memory, and after a barrier two threads per row fold them into their running max.
// Doc tiles are double-buffered: tile t + 1 is copied by cp.async (<cuda_pipeline.h>: 16-byte
// copies, one batch per tile) while tile t is multiplied and folded, so its loads overlap the
// block's own MMAs. Rows that are not 16-byte aligned (d not a multiple of 16 bytes, or an
// unaligned base) are staged by plain loads instead, without that overlap.
//
// Why the similarities go through shared memory: the fold never reads a fragment element, so the
// kernel depends on no fragment layout (the simulator keeps whole tiles per lane, the hardware a
// few elements per lane) and stays exact under both.
// cp.async runs on the simulator through csrc/sim/include/cuda_pipeline.h, which lands a copy only
// at the wait that covers it (and poisons its destination until then), so a read of a tile before
// its wait, or a copy into the buffer still being read, fails the tests there.
//
// Determinism and ties: each of a row's two threads scans its columns (j = 2c + half) in
// increasing j and keeps the first maximum (RunningMax::update); the pair merges value first,
// then the lower index (RunningMax::merge), so the argmax is the first maximal doc token, as on
// the CPU. Scores add the query's row contributions in row order. No atomics.
// Masks: a masked or past-the-end doc token never enters the max; a masked query token gets
// argmax -1 and adds 0; zero-padded rows and features add exact zeros to every product.
#pragma once

#include <cuda_pipeline.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>

#include "common/maxsim.h"
#include "cuda/maxsim_groups.cuh"

#include "sim/portable.h"

namespace kdops::cuda::tensor_core {

constexpr int kCols = 64;              // doc tokens per tile
constexpr int kThreads = 128;          // 4 warps, one 16-row strip each (WMMA m = n = kFrag)
constexpr int kStrips = kRows / kFrag;
constexpr int kColFrags = kCols / kFrag;
static_assert(kStrips * 32 == kThreads, "one warp per 16-row strip");
static_assert(2 * kRows == kThreads, "two threads fold each row");
constexpr int kAlign = 128;            // slack to align the dynamic buffer for WMMA (32 B needed)

// Per input type (fp32 only; the kernel is written over it as the WMMA API is): the element
// staged in shared memory (the TF32 value in a float), the pointer type load_matrix_sync reads,
// the fragment's precision and k.
template <typename scalar_t> struct Operand;
template <> struct Operand<float> {
  using stored = float;
  using load_t = float;
  using precision = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
};

// Shared-memory row strides in elements. +8 elements (32 bytes) staggers rows across banks
// and keeps every fragment (16 rows x k columns, k a multiple of 8 elements) 32-byte aligned, as
// load_matrix_sync requires.
KDOPS_HD int tile_stride(int64_t dim) { return round_up(dim, kFrag) + 8; }
constexpr int kSimStride = kCols + 4;  // fp32 similarities

// Dynamic shared memory: query rows, two doc tiles (elem_bytes per element), similarities (fp32).
constexpr int kStagedRows = kRows + 2 * kCols;
inline int64_t smem_bytes(int64_t dim, int elem_bytes) {
  return kAlign + int64_t(kStagedRows) * tile_stride(dim) * elem_bytes + int64_t(kRows) * kSimStride * 4;
}

// An input element as the tensor core takes it: an fp32 value rounded to TF32 (cvt.rna.tf32.f32)
// once here, so every product reads the same rounded operand.
__device__ inline float to_operand(float x) { return nvcuda::wmma::__float_to_tf32(x); }
__device__ inline uint4 to_operand(uint4 v, float) {
  auto round = [](unsigned bits) { return __float_as_uint(to_operand(__uint_as_float(bits))); };
  return make_uint4(round(v.x), round(v.y), round(v.z), round(v.w));
}

// Copies `rows` rows of `dim` elements into a tile of `stride` as operands (to_operand),
// zero-filling features dim..round_up(dim, 16) and rows whose source is nullptr. Vectorised to
// 16 bytes when every source row is 16-byte aligned (vec: vector_loads).
template <typename T, typename RowPtr>
__device__ void stage_rows(T* tile, int stride, int rows, int dim, bool vec, RowPtr row_ptr) {
  const int width = round_up(dim, kFrag);
  if (vec) {
    constexpr int kVec = 16 / sizeof(T);
    const int per_row = width / kVec;
    for (int e = threadIdx.x; e < rows * per_row; e += kThreads) {
      const int r = e / per_row, c = (e - r * per_row) * kVec;
      const T* src = row_ptr(r);
      uint4 value = make_uint4(0u, 0u, 0u, 0u);
      if (src != nullptr && c < dim) value = to_operand(*reinterpret_cast<const uint4*>(src + c), T());
      *reinterpret_cast<uint4*>(tile + r * stride + c) = value;
    }
  } else {
    for (int e = threadIdx.x; e < rows * width; e += kThreads) {
      const int r = e / width, c = e - r * width;
      const T* src = row_ptr(r);
      tile[r * stride + c] = src != nullptr && c < dim ? to_operand(src[c]) : T(0);  // 0 bits = +0.0
    }
  }
}

// Starts staging doc rows first_row[0..tokens) (row stride dim) into a kCols-row tile: with vec,
// 16-byte cp.async copies (the caller commits them as one batch and waits before reading), zeros
// stored for rows past the doc and features past d; without vec, plain loads (stage_rows).
template <typename T>
__device__ void start_doc_tile(T* tile, int stride, int dim, bool vec, const T* first_row, int64_t tokens) {
  if (!vec) {
    stage_rows(tile, stride, kCols, dim, false, [&](int r) -> const T* {
      return r < tokens ? first_row + int64_t(r) * dim : nullptr;
    });
    return;
  }
  constexpr int kVec = 16 / sizeof(T);
  const int per_row = round_up(dim, kFrag) / kVec;
  for (int e = threadIdx.x; e < kCols * per_row; e += kThreads) {
    const int r = e / per_row, c = (e - r * per_row) * kVec;
    T* dst = tile + r * stride + c;
    if (r < tokens && c < dim) {
      __pipeline_memcpy_async(dst, first_row + int64_t(r) * dim + c, 16);
    } else {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// After the wait for its tile: a cp.async copies bits as they are, so each thread rounds the
// elements it copied to TF32 (to_operand) in place; plain loads rounded as they stored.
template <typename T>
__device__ void finish_doc_tile(T* tile, int stride, int dim, bool vec, int64_t tokens) {
  if (!vec) return;
  constexpr int kVec = 16 / sizeof(T);
  const int per_row = round_up(dim, kFrag) / kVec;
  for (int e = threadIdx.x; e < kCols * per_row; e += kThreads) {
    const int r = e / per_row, c = (e - r * per_row) * kVec;
    if (r >= tokens || c >= dim) continue;
    uint4* chunk = reinterpret_cast<uint4*>(tile + r * stride + c);
    *chunk = to_operand(*chunk, T());
  }
}

// kWriteArgmax false (no gradient wanted, argmax nullptr): only the scores are written.
// Occupancy hint of 3 blocks (<= 168 registers; shared memory allows one TF32 block per H100 SM
// at d = 128, 122 KB): without a hint ptxas gave some 16-bit instances of this kernel, when it
// also served fp16/bf16, 80 registers and a spill (sm_90).
template <typename scalar_t, bool kWriteArgmax>
__global__ void __launch_bounds__(kThreads, 3)
    maxsim_tensor_core_kernel(MaxSimView<scalar_t> v, Groups grp, bool vec, float* scores,
                              int32_t* argmax) {
  using namespace nvcuda;
  using T = typename Operand<scalar_t>::stored;
  using load_t = typename Operand<scalar_t>::load_t;
  using precision = typename Operand<scalar_t>::precision;
  constexpr int kK = Operand<scalar_t>::kK;
  KDOPS_DYNAMIC_SMEM(unsigned char, smem_raw);
  alignas(16) __shared__ float contrib[kRows];  // each row's max (0 when masked or no token)
  const MaxSimLayout& l = v.layout;
  const int dim = static_cast<int>(v.dim), stride = tile_stride(dim), width = round_up(dim, kFrag);
  unsigned char* base = smem_raw + (kAlign - reinterpret_cast<uintptr_t>(smem_raw) % kAlign) % kAlign;
  T* q_tile = reinterpret_cast<T*>(base);
  T* d_tiles = q_tile + kRows * stride;  // two buffers of kCols rows: tile t in buffer t % 2
  float* sims = reinterpret_cast<float*>(d_tiles + 2 * kCols * stride);
  const T* Q = reinterpret_cast<const T*>(v.Q);
  const T* D = reinterpret_cast<const T*>(v.D);
  const int warp = threadIdx.x / 32;
  const int row = threadIdx.x / 2, half = threadIdx.x % 2;  // the fold: row, column parity
  const int used_rows = grp.G * grp.seg;

  for (int64_t item = blockIdx.x; item < grp.items; item += gridDim.x) {
    const Item it = grp.item(item, l, v.Nq);
    const int64_t u = it.u, q0 = it.q0, k = it.k;
    const int nq = it.nq;
    const int64_t start = l.start(u), length = l.length(u);
    float score = 0;  // thread t < nq: query q0 + t, summed over its chunks in order

    for (int chunk = 0; chunk < grp.chunks; ++chunk) {
      // Row r holds token i of query q0 + r / seg, or zeros past the query's end.
      const int qr = row / grp.seg;
      const int64_t i = int64_t(chunk) * grp.seg + row % grp.seg;
      const bool row_real = row < used_rows && qr < nq && i < v.Lq;
      __syncthreads();  // the previous chunk's q_tile and contrib are no longer read
      stage_rows(q_tile, stride, kRows, dim, vec, [&](int r) -> const T* {
        const int64_t ri = int64_t(chunk) * grp.seg + r % grp.seg;
        const int64_t rq = r / grp.seg;
        if (r >= used_rows || rq >= nq || ri >= v.Lq) return nullptr;
        return Q + ((q0 + rq) * v.Lq + ri) * v.dim;
      });
      RunningMax<float> m = empty_running_max<float>();
      const int64_t tiles = (length + kCols - 1) / kCols;
      const auto tokens_of = [&](int64_t t) { return std::min<int64_t>(kCols, length - t * kCols); };
      const auto buffer = [&](int64_t t) { return d_tiles + (t % 2) * kCols * stride; };
      if (tiles > 0) start_doc_tile(buffer(0), stride, dim, vec, D + start * v.dim, tokens_of(0));
      __pipeline_commit();
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t j0 = t * kCols, tokens = tokens_of(t);
        const T* d_tile = buffer(t);
        // Buffer (t + 1) % 2 was last read by tile t - 1's MMAs, which ended before the barrier
        // that preceded its fold. One batch per iteration (empty for the last), so waiting until
        // at most one is in flight means tile t has landed.
        if (t + 1 < tiles) {
          start_doc_tile(buffer(t + 1), stride, dim, vec, D + (start + j0 + kCols) * v.dim, tokens_of(t + 1));
        }
        __pipeline_commit();
        __pipeline_wait_prior(1);
        finish_doc_tile(buffer(t), stride, dim, vec, tokens);
        __syncthreads();  // tile t (and the query rows) staged by every thread, tile t - 1 folded
        if (warp * kFrag < used_rows) {  // strips of padding rows only: nothing to compute
          wmma::fragment<wmma::accumulator, kFrag, kFrag, kK, float> acc[kColFrags];
#pragma unroll
          for (int n = 0; n < kColFrags; ++n) wmma::fill_fragment(acc[n], 0.0f);
          for (int kk = 0; kk < width; kk += kK) {
            wmma::fragment<wmma::matrix_a, kFrag, kFrag, kK, precision, wmma::row_major> a;
            wmma::load_matrix_sync(a, reinterpret_cast<const load_t*>(q_tile + warp * kFrag * stride + kk), stride);
#pragma unroll
            for (int n = 0; n < kColFrags; ++n) {
              // B[kk.., n..] = D_tile[n.., kk..]^T: the doc tile read column-major.
              wmma::fragment<wmma::matrix_b, kFrag, kFrag, kK, precision, wmma::col_major> b;
              wmma::load_matrix_sync(b, reinterpret_cast<const load_t*>(d_tile + n * kFrag * stride + kk), stride);
              wmma::mma_sync(acc[n], a, b, acc[n]);
            }
          }
#pragma unroll
          for (int n = 0; n < kColFrags; ++n) {
            wmma::store_matrix_sync(sims + warp * kFrag * kSimStride + n * kFrag, acc[n], kSimStride,
                                    wmma::mem_row_major);
          }
        }
        __syncthreads();
        // Rows of the computed strips (used_rows is a multiple of 16); those past a query's end
        // fold zeros and are dropped below (testing row_real here cost a spill on sm_80).
        if (row < used_rows) {
          for (int c = half; c < tokens; c += 2) {  // increasing j: update keeps the first max
            const int64_t j = j0 + c;
            if (v.doc_token_valid(start + j)) m.update(sims[row * kSimStride + c], static_cast<int32_t>(j));
          }
        }
      }
      // Merge the row's two halves (lanes 2r and 2r + 1 of one warp): value, then lower index.
      const float other_value = __shfl_xor_sync(0xffffffffu, m.value, 1);
      const int32_t other_index = __shfl_xor_sync(0xffffffffu, m.index, 1);
      m.merge(other_value, other_index);
      if (half == 0) {
        float c = 0;
        if (row_real) {
          if (!v.query_token_valid(q0 + qr, i)) m.index = -1;
          if constexpr (kWriteArgmax) argmax[v.argmax_index(q0 + qr, k, i)] = m.index;
          c = m.contribution();
        }
        contrib[row] = c;
      }
      __syncthreads();
      if (threadIdx.x < nq) {
        const int first = threadIdx.x * grp.seg;
        for (int r = first; r < first + grp.seg; ++r) score += contrib[r];
      }
    }
    if (threadIdx.x < nq) scores[(q0 + threadIdx.x) * l.K + k] = score;
  }
}

}  // namespace kdops::cuda::tensor_core
