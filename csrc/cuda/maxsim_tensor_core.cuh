// MaxSim forward on tensor cores for fp16/bf16 inputs: score(q, k) = sum_i max_j <Q[q, i], D_k[j]>
// (common/maxsim.h), the similarities computed by WMMA m16n16k16 with fp32 accumulation and
// never written to global memory.
//
// Work split. One block takes a doc u and a group of G whole queries that read it (all pairs and
// packed: G = kRows / (Lq rounded up to 16) queries, so each doc tile is staged once for several
// queries; per query: G = 1, its only reader). The group's query tokens are kRows shared-memory
// rows (each query a segment of `seg` rows, zero-padded); a query longer than kRows is taken in
// chunks of kRows rows. The doc streams through shared memory kCols tokens at a time; each warp
// multiplies a 16-row strip of the queries with the tile, stores its 16 x kCols fp32 similarities
// to shared memory, and after a barrier two threads per row fold them into their running max.
//
// Why the similarities go through shared memory: the fold never reads a fragment element, so the
// kernel depends on no fragment layout (the simulator keeps whole tiles per lane, the hardware a
// few elements per lane) and stays exact under both.
// Why plain loads and no cp.async double buffer: cp.async is inline PTX the simulator cannot run;
// a block needs ~52 KB (d = 128), so four blocks share an SM and one block's tile loads overlap
// the others' MMAs instead.
//
// Determinism and ties: each of a row's two threads scans its columns (j = 2c + half) in
// increasing j and keeps the first maximum (RunningMax::update); the pair merges value first,
// then the lower index (RunningMax::merge), so the argmax is the first maximal doc token, as on
// the CPU. Scores add the query's row contributions in row order. No atomics.
// Masks: a masked or past-the-end doc token never enters the max; a masked query token gets
// argmax -1 and adds 0; zero-padded rows and features add exact zeros to every product.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "common/maxsim.h"

#include "sim/portable.h"

namespace kdops::cuda::tensor_core {

constexpr int kRows = 64;              // query-token rows per block
constexpr int kCols = 64;              // doc tokens per tile
constexpr int kThreads = 128;          // 4 warps, one 16-row strip each
constexpr int kFrag = 16;              // WMMA m = n = k
constexpr int kStrips = kRows / kFrag;
constexpr int kColFrags = kCols / kFrag;
static_assert(kStrips * 32 == kThreads, "one warp per 16-row strip");
static_assert(2 * kRows == kThreads, "two threads fold each row");
constexpr int kAlign = 128;            // slack to align the dynamic buffer for WMMA (32 B needed)

// The WMMA element type of each half scalar type (same 2-byte layout).
template <typename scalar_t> struct WmmaType;
template <> struct WmmaType<c10::Half> { using type = __half; };
template <> struct WmmaType<c10::BFloat16> { using type = __nv_bfloat16; };

KDOPS_HD int round_up(int64_t x, int to) { return static_cast<int>((x + to - 1) / to * to); }

// Shared-memory row strides in elements. +8 halves (16 bytes) staggers rows across banks and
// keeps every 16-row x 16-column fragment 32-byte aligned, as load_matrix_sync requires.
KDOPS_HD int tile_stride(int64_t dim) { return round_up(dim, kFrag) + 8; }
constexpr int kSimStride = kCols + 4;  // fp32 similarities

// Dynamic shared memory: query rows, doc tile (2-byte elements), similarities (fp32).
inline int64_t smem_bytes(int64_t dim) {
  return kAlign + int64_t(kRows + kCols) * tile_stride(dim) * 2 + int64_t(kRows) * kSimStride * 4;
}

// The largest d whose buffers fit in `limit` bytes of dynamic shared memory.
inline int64_t max_dim(int64_t limit) {
  const int64_t fixed = kAlign + int64_t(kRows) * kSimStride * 4, per_feature = int64_t(kRows + kCols) * 2;
  return std::max<int64_t>(0, ((limit - fixed) / per_feature - 8) / kFrag * kFrag);
}

// Which queries, rows and doc a block works on (see the top of the file).
struct Groups {
  int seg;     // shared-memory rows per query (Lq rounded up to 16, at most kRows)
  int G;       // queries per block
  int chunks;  // row chunks per query (> 1 only when Lq > kRows)
  int64_t groups_per_doc;
  int64_t items;  // blocks of work
};

inline Groups groups_for(int64_t Nq, int64_t Lq, const MaxSimLayout& l) {
  Groups g;
  g.seg = Lq >= kRows ? kRows : round_up(std::max<int64_t>(Lq, 1), kFrag);
  g.G = l.per_query ? 1 : kRows / g.seg;
  g.chunks = static_cast<int>((Lq + g.seg - 1) / g.seg);
  g.groups_per_doc = l.per_query ? 1 : (Nq + g.G - 1) / g.G;
  g.items = l.per_query ? Nq * l.K : l.num_docs * g.groups_per_doc;
  return g;
}

// Copies `rows` rows of `dim` 2-byte elements into a tile of `stride`, zero-filling features
// dim..round_up(dim, 16) and rows whose source is nullptr. Vectorised to 16 bytes when every
// source row is 16-byte aligned (vec: dim % 8 == 0 and an aligned base).
template <typename RowPtr>
__device__ void stage_rows(uint16_t* tile, int stride, int rows, int dim, bool vec, RowPtr row_ptr) {
  const int width = round_up(dim, kFrag);
  if (vec) {
    const int per_row = width / 8;
    for (int e = threadIdx.x; e < rows * per_row; e += kThreads) {
      const int r = e / per_row, c = (e - r * per_row) * 8;
      const uint16_t* src = row_ptr(r);
      uint4 value = make_uint4(0u, 0u, 0u, 0u);
      if (src != nullptr && c < dim) value = *reinterpret_cast<const uint4*>(src + c);
      *reinterpret_cast<uint4*>(tile + r * stride + c) = value;
    }
  } else {
    for (int e = threadIdx.x; e < rows * width; e += kThreads) {
      const int r = e / width, c = e - r * width;
      const uint16_t* src = row_ptr(r);
      tile[r * stride + c] = src != nullptr && c < dim ? src[c] : uint16_t(0);  // 0 bits = +0.0
    }
  }
}

// kWriteArgmax false (no gradient wanted, argmax nullptr): only the scores are written.
template <typename scalar_t, bool kWriteArgmax>
__global__ void __launch_bounds__(kThreads)
    maxsim_tensor_core_kernel(MaxSimView<scalar_t> v, Groups grp, bool vec, float* scores,
                              int32_t* argmax) {
  using namespace nvcuda;
  using elem_t = typename WmmaType<scalar_t>::type;
  KDOPS_DYNAMIC_SMEM(unsigned char, smem_raw);
  alignas(16) __shared__ float contrib[kRows];  // each row's max (0 when masked or no token)
  const MaxSimLayout& l = v.layout;
  const int dim = static_cast<int>(v.dim), stride = tile_stride(dim), width = round_up(dim, kFrag);
  unsigned char* base = smem_raw + (kAlign - reinterpret_cast<uintptr_t>(smem_raw) % kAlign) % kAlign;
  uint16_t* q_tile = reinterpret_cast<uint16_t*>(base);
  uint16_t* d_tile = q_tile + kRows * stride;
  float* sims = reinterpret_cast<float*>(d_tile + kCols * stride);
  const uint16_t* Q = reinterpret_cast<const uint16_t*>(v.Q);
  const uint16_t* D = reinterpret_cast<const uint16_t*>(v.D);
  const int warp = threadIdx.x / 32;
  const int row = threadIdx.x / 2, half = threadIdx.x % 2;  // the fold: row, column parity
  const int used_rows = grp.G * grp.seg;

  for (int64_t item = blockIdx.x; item < grp.items; item += gridDim.x) {
    const int64_t u = item / grp.groups_per_doc;
    const int64_t q0 = l.per_query ? u / l.K : (item - u * grp.groups_per_doc) * grp.G;
    const int64_t k = l.per_query ? u - q0 * l.K : u;  // the column of every query in the group
    const int nq = static_cast<int>(std::min<int64_t>(grp.G, v.Nq - q0));
    const int64_t start = l.start(u), length = l.length(u);
    float score = 0;  // thread t < nq: query q0 + t, summed over its chunks in order

    for (int chunk = 0; chunk < grp.chunks; ++chunk) {
      // Row r holds token i of query q0 + r / seg, or zeros past the query's end.
      const int qr = row / grp.seg;
      const int64_t i = int64_t(chunk) * grp.seg + row % grp.seg;
      const bool row_real = row < used_rows && qr < nq && i < v.Lq;
      __syncthreads();  // the previous chunk's q_tile and contrib are no longer read
      stage_rows(q_tile, stride, kRows, dim, vec, [&](int r) -> const uint16_t* {
        const int64_t ri = int64_t(chunk) * grp.seg + r % grp.seg;
        const int64_t rq = r / grp.seg;
        if (r >= used_rows || rq >= nq || ri >= v.Lq) return nullptr;
        return Q + ((q0 + rq) * v.Lq + ri) * v.dim;
      });
      RunningMax<float> m = empty_running_max<float>();
      for (int64_t j0 = 0; j0 < length; j0 += kCols) {
        const int64_t tokens = std::min<int64_t>(kCols, length - j0);
        __syncthreads();  // the previous tile's similarities are folded
        stage_rows(d_tile, stride, kCols, dim, vec, [&](int r) -> const uint16_t* {
          return r < tokens ? D + (start + j0 + r) * v.dim : nullptr;
        });
        __syncthreads();
        if (warp * kFrag < used_rows) {  // strips of padding rows only: nothing to compute
          wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> acc[kColFrags];
#pragma unroll
          for (int n = 0; n < kColFrags; ++n) wmma::fill_fragment(acc[n], 0.0f);
          for (int kk = 0; kk < width; kk += kFrag) {
            wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, elem_t, wmma::row_major> a;
            wmma::load_matrix_sync(a, reinterpret_cast<const elem_t*>(q_tile + warp * kFrag * stride + kk), stride);
#pragma unroll
            for (int n = 0; n < kColFrags; ++n) {
              // B[kk.., n..] = D_tile[n.., kk..]^T: the doc tile read column-major.
              wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, elem_t, wmma::col_major> b;
              wmma::load_matrix_sync(b, reinterpret_cast<const elem_t*>(d_tile + n * kFrag * stride + kk), stride);
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
        if (row_real) {
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
