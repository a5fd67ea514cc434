// MaxSim forward for maxsim_quantized on tensor cores (kdops/reference.py maxsim_quantized):
// score(q, k) = sum_i qs[q, i] * max_j <Q[q, i], D_k[j]> * ds_k[j], the scores of the raw token
// values (int8, e4m3, or a float32 query) with the per-token scales (qs = 1 for a float32 query)
// applied outside the dot product: the doc token's to each (row, column) before the max, as the
// max does not commute with per-column scales, the query token's to the row's max. Two operand
// kinds (the Operands policies below):
//   Int8Operands (int8 Q and D): tokens staged as they are, exact int32 sums by mma.sync
//     m16n8k32 .s8; the similarity is float(sum) * ds, the CPU's Int8Policy's value.
//   HalfOperands (every other pairing): tokens decoded to fp16 as they are staged (int8 and e4m3
//     values are exact in fp16; a float32 query is rounded to fp16), fp32 sums by mma.sync
//     m16n8k16 (products of fp16 values are exact in fp32). A finite float32 value past fp16's
//     range is flagged as it is staged, and the grid's answer written at the kernel's end
//     (grid_none.cuh), for the op to assert: the range check costs no launch of its own.
// Both are fed by ldmatrix (mma_ptx.cuh): it reads 16-byte rows whatever the element, and
// register i of a lane holds 4 bytes of one row, which is both mma's fragment (two fp16, or four
// int8). A mma step takes 32 bytes of features (16 fp16 or 32 int8) in either case.
//
// Work split and warp layout: those of the fp16/bf16 maxsim forward (maxsim_mma.cuh, whose Walk
// and column_masks this reuses): a block takes a doc and a group of whole queries
// (maxsim_groups.cuh, kRows = 64 query rows), the doc streams through shared memory kCols = 64
// tokens at a time, and four warps in 2 x 2 each multiply 32 query rows with 32 of the tile's
// tokens, the accumulators staying in registers. A d too wide for shared memory is taken in
// feature chunks of `width` elements (a multiple of the mma's k), the sums carried across the
// chunks. Staging: tokens copied as they are (int8 x int8, d and the rows 16-byte aligned) go
// by 16-byte cp.async copies, and when all of d fits in one chunk with kStages doc tiles, the doc
// streams through a kStages-deep pipeline as in maxsim_mma.cuh (the next tiles' copies in flight
// while a tile is multiplied); else one tile at a time (`stages` = 1), by cp.async or, for the
// decoded pairings (fp16 from int8, e4m3, float32 or residual codes), plain loads decoded in
// registers.
//
// Shared-memory rows: width elements + 16 bytes, an odd number of 16-byte units, so each
// ldmatrix phase's 8 row addresses fall in distinct bank groups.
//
// Determinism and ties: as in maxsim_mma.cuh. Each lane visits its columns in increasing j and
// keeps the first maximum; quads, then the two column warps, merge value first, then the lower
// index. Each row's contribution (its max times qs) is stored before the query's rows are added
// in row order, the order the CPU kernel adds them: for int8 the two compute the same float32
// values in the same order, so the scores are equal bit for bit.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <type_traits>

#include <c10/util/Float8_e4m3fn.h>
#include <cuda_pipeline.h>

#include "common/maxsim.h"
#include "cuda/grid_none.cuh"
#include "cuda/maxsim_groups.cuh"
#include "cuda/maxsim_mma.cuh"
#include "cuda/maxsim_serving_kernels.h"
#include "cuda/mma_ptx.cuh"

#include "sim/portable.h"

namespace kdops::cuda::tensor_core::serving {

using mma::kCols;
using mma::kMTiles;
using mma::kNTiles;
using mma::kThreads;
using mma::kWarpCols;
using mma::kWarpRows;
using mma::Walk;

constexpr int kStep = 32;  // bytes of features per mma step
constexpr int kVec = 16;   // bytes per vector load, and the row padding
constexpr int kStages = mma::kStages;  // doc tiles in flight in the cp.async pipeline

using maxsim_serving::element_bytes;
using maxsim_serving::Format;
using maxsim_serving::ResidualDocs;

// int8 Q and D: staged as they are, exact int32 sums.
struct Int8Operands {
  using stored = int8_t;
  using acc_t = int32_t;
  static constexpr int kK = kStep;  // elements per mma step
  static constexpr int kMinBlocks = 4;  // blocks per SM (launch bounds): 128 registers, no spills
  __device__ static void mma(int32_t (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k32_s8(acc, a, b, acc);
  }
};

// Any other pairing: staged as fp16, fp32 sums.
struct HalfOperands {
  using stored = uint16_t;  // fp16 bits
  using acc_t = float;
  static constexpr int kK = kStep / 2;
  // Blocks per SM: the decoders (fp8, residual) need more than 128 registers, which spilled to a
  // 16-byte stack frame at 4 blocks; 3 allow 168.
  static constexpr int kMinBlocks = 3;
  __device__ static void mma(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k16<__half>(acc, a, b, acc);
  }
};

// Shared-memory row stride in bytes for chunks of `width` elements (a multiple of the mma's k).
template <typename Op>
KDOPS_HD int tile_stride(int64_t width) {
  return static_cast<int>(width * int64_t(sizeof(typename Op::stored))) + kVec;
}

// Dynamic shared memory: the query rows and `stages` doc tiles.
template <typename Op>
int64_t smem_bytes(int64_t width, int stages) {
  return int64_t(kRows + stages * kCols) * tile_stride<Op>(width);
}

// fp16's largest finite value: a finite float32 past it would round to an infinity.
constexpr float kHalfMax = 65504.0f;

// Element f of a token row in `format`, as the fp16 the mma takes (int8 and e4m3 exactly; a
// float32 rounded to nearest, `beyond` set if it is finite and past kHalfMax: the ops refuse it
// through the kernel's range flag; infinities and NaN are fp16 values and pass).
__device__ inline uint16_t half_bits(const void* row, int64_t f, Format format, bool& beyond) {
  float x;
  if (format == Format::kInt8) {
    x = static_cast<const int8_t*>(row)[f];
  } else if (format == Format::kE4m3) {
    x = static_cast<float>(c10::Float8_e4m3fn(static_cast<const uint8_t*>(row)[f], c10::Float8_e4m3fn::from_bits()));
  } else {
    x = static_cast<const float*>(row)[f];
    beyond |= fabsf(x) > kHalfMax && fabsf(x) <= FLT_MAX;
  }
  return __half_as_ushort(__float2half_rn(x));
}

// Stages elements [f0, f0 + width) of rows [0, rows) of a tile (row stride `stride` bytes): row r
// from src_of(r) (its first element, in `format`; nullptr: zeros), elements past dim as zeros.
// Int8Operands with vec (d and every row start 16-byte aligned: a copy is then all in or all
// past d): 16-byte cp.async copies, which land at the caller's wait; else an element at a time
// (walk over chunks or elements accordingly).
// beyond: set by a float32 element past fp16's range (half_bits).
template <typename Op, typename RowSrc>
__device__ void stage(char* tile, int stride, int rows, int64_t dim, int64_t f0, Format format, bool vec,
                      const Walk& walk, RowSrc src_of, bool& beyond) {
  using stored = typename Op::stored;
  if constexpr (std::is_same_v<Op, Int8Operands>) {
    if (vec) {
      walk.over(rows, [&](int r, int c) {
        const char* src = src_of(r);
        const int64_t f = f0 + int64_t(c) * kVec;
        char* dst = tile + r * stride + c * kVec;
        if (src != nullptr && f < dim) {
          __pipeline_memcpy_async(dst, src + f, 16);
        } else {
          *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
      });
      return;
    }
  }
  walk.over(rows, [&](int r, int c) {
    const void* src = src_of(r);
    stored value = 0;  // 0 bits: 0 and +0.0
    if (src != nullptr && f0 + c < dim) {
      if constexpr (std::is_same_v<Op, Int8Operands>) {
        value = static_cast<const int8_t*>(src)[f0 + c];
      } else {
        value = half_bits(src, f0 + c, format, beyond);
      }
    }
    reinterpret_cast<stored*>(tile + r * stride)[c] = value;
  });
}

// One warp's share of a feature chunk (width_bytes of each row): its first kM m16 tiles of query
// rows (from a_rows, this lane's ldmatrix row) times its 32 doc tokens (from b_rows), added to
// the accumulators.
template <typename Op, int kM>
__device__ __forceinline__ void multiply(const char* a_rows, const char* b_rows, int stride, int width_bytes,
                                         typename Op::acc_t (&acc)[kMTiles][kNTiles][4]) {
  for (int kk = 0; kk < width_bytes; kk += kStep) {
    uint32_t a[kM][4], b[kNTiles][2];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) ptx::ldmatrix<4>(a[mi], a_rows + mi * kFrag * stride + kk);
#pragma unroll
    for (int nj = 0; nj < kNTiles / 2; ++nj) {
      uint32_t r[4];
      ptx::ldmatrix<4>(r, b_rows + nj * 16 * stride + kk);
      b[2 * nj][0] = r[0];
      b[2 * nj][1] = r[1];
      b[2 * nj + 1][0] = r[2];
      b[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
      for (int ni = 0; ni < kNTiles; ++ni) Op::mma(acc[mi][ni], a[mi], b[ni]);
    }
  }
}

// Residual docs (ColBERT/PLAID): bucket index of dimension e of a token's packed residuals, its
// bits at stream positions e * nbits + k (k = 0 least significant), the first stream bit of a
// byte in its most significant bit (kdops/reference.py residual_decompress).
__device__ inline int residual_bucket(const uint8_t* packed, int64_t e, int nbits) {
  const int64_t p = e * nbits;  // nbits divides 8: a bucket never straddles two bytes
  const int byte = packed[p / 8], first = static_cast<int>(p % 8);
  int bucket = 0;
  for (int k = 0; k < nbits; ++k) bucket |= ((byte >> (7 - first - k)) & 1) << k;
  return bucket;
}

// The unnormalised value of dimension e of doc token row `row`: its centroid's plus its bucket's
// weight (the normalisation scales it by the row's inverse norm, residual_norms).
__device__ inline float residual_value(const ResidualDocs& docs, int64_t row, int64_t dim, int64_t e) {
  const int64_t bytes = dim * docs.nbits / 8;
  return docs.centroids[int64_t(docs.codes[row]) * dim + e] +
         docs.weights[residual_bucket(docs.residuals + row * bytes, e, docs.nbits)];
}

// inv_norm[r] = 1 / max(||x_r||, 1e-12) (torch.nn.functional.normalize's eps) of the tile's doc
// token rows r < tokens (first on), x the unnormalised values: two threads a row (consecutive
// lanes), each summing every other dimension, then one shuffle. rsqrtf (within 2 ulp) rather than
// a division and sqrtf: their IEEE slow paths are calls that cost this kernel a stack frame, and
// the value is rounded to fp16 (2^-11) anyway. Every thread calls it.
__device__ inline void residual_norms(const ResidualDocs& docs, int64_t first, int64_t tokens, int64_t dim,
                                      float* inv_norm) {
  static_assert(kThreads == 2 * kCols, "two threads per doc row");
  const int r = static_cast<int>(threadIdx.x) / 2, half = static_cast<int>(threadIdx.x) % 2;
  float squares = 0;
  if (r < tokens) {
    for (int64_t e = half; e < dim; e += 2) {
      const float x = residual_value(docs, first + r, dim, e);
      squares += x * x;
    }
  }
  squares += __shfl_xor_sync(0xffffffffu, squares, 1);
  if (half == 0) inv_norm[r] = fminf(rsqrtf(squares), 1e12f);
}

// Stages elements [f0, f0 + width) of the tile's doc rows from residual docs, decoded as ColBERT
// decompresses them (x / ||x||) and rounded to fp16; rows past `tokens` and elements past dim as
// zeros.
__device__ inline void stage_residual(char* tile, int stride, const ResidualDocs& docs, int64_t first,
                                      int64_t tokens, int64_t dim, int64_t f0, const float* inv_norm,
                                      const Walk& walk) {
  walk.over(kCols, [&](int r, int c) {
    uint16_t value = 0;
    if (r < tokens && f0 + c < dim) {
      value = __half_as_ushort(__float2half_rn(residual_value(docs, first + r, dim, f0 + c) * inv_norm[r]));
    }
    reinterpret_cast<uint16_t*>(tile + r * stride)[c] = value;
  });
}

// One side's tokens: their format and per-token scales (float32, finite, >= 0; nullptr: float32
// or residual tokens, unscaled). q: [Nq, Lq]; d: one per doc token row.
struct Side {
  Format format;
  const float* scale;
};

// v: Q and D as bytes (rows of dim elements in q.format / d.format; d.format kResidual: the docs
// in `residual`, HalfOperands only). width: the elements per feature chunk (a multiple of Op::kK;
// all of d, rounded up, when it fits). pipeline_stages: doc tiles in flight, kStages (vec
// Int8Operands, one feature chunk) or 1. in_half_range (float32 tokens, HalfOperands; else nullptr):
// set to whether every float32 element staged lies within fp16's range (grid_none, its two zero
// words in grid_words), which the op asserts on the device: the check costs no pass of its own.
template <typename Op, bool kWriteArgmax>
__global__ void __launch_bounds__(kThreads, Op::kMinBlocks)
    maxsim_serving_kernel(MaxSimView<char> v, Side q, Side d, ResidualDocs residual, Groups grp, int width,
                          int pipeline_stages, bool vec, float* scores, int32_t* argmax, unsigned int* grid_words,
                          bool* in_half_range) {
  KDOPS_DYNAMIC_SMEM(char, smem);
  __shared__ const char* q_src[kRows];      // each query row's source row (nullptr: zeros)
  __shared__ uint32_t col_mask[kStages][2];    // mma::column_masks of the tile in each stage
  __shared__ float col_scale[kStages][kCols];  // its doc token scales (0 past the doc's end)
  __shared__ float inv_norm[kCols];         // residual docs: the inverse norms of the tile's tokens
  __shared__ float part_value[2][kRows];     // each row's max over a column half (warp column wc)
  __shared__ int32_t part_index[2][kRows];
  const mma::RowArgmax argmax_rows{part_value, part_index};
  alignas(16) __shared__ float contrib[kRows];  // each row's max times its scale (0: masked, no token)
  const MaxSimLayout& l = v.layout;
  const int stride = tile_stride<Op>(width), width_bytes = width * static_cast<int>(sizeof(typename Op::stored));
  const int64_t feature_chunks = (v.dim + width - 1) / width;
  const int64_t q_row_bytes = v.dim * element_bytes(q.format), d_row_bytes = v.dim * element_bytes(d.format);
  const bool residual_docs = d.format == Format::kResidual;
  // 1 at compile time for the decoders, which keep their registers for decoding.
  const int stages = std::is_same_v<Op, Int8Operands> ? pipeline_stages : 1;
  char* q_tile = smem;
  char* d_tiles = q_tile + kRows * stride;  // `stages` buffers of kCols rows: step s in s % stages
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32, wr = warp / 2, wc = warp % 2;
  const int g = lane / 4, tig = lane % 4;  // the lane's row and column pair in the accumulators
  const bool vec_loads = vec && std::is_same_v<Op, Int8Operands>;
  const Walk walk(vec_loads ? width / kVec : width);
  // The lane's ldmatrix row (byte offset in a tile), as maxsim_mma.cuh's with 16-byte halves.
  const int a_offset = (wr * kWarpRows + lane % 16) * stride + kVec * (lane / 16);
  const int b_offset = (wc * kWarpCols + 8 * (lane / 16) + lane % 8) * stride + kVec * ((lane / 8) % 2);
  bool beyond = false;  // a float32 element this thread staged lies past fp16's range

  for (int64_t item = blockIdx.x; item < grp.items; item += gridDim.x) {
    const int64_t u = item / grp.groups_per_doc;
    const int64_t q0 = l.per_query ? u / l.K : (item - u * grp.groups_per_doc) * grp.G;
    const int64_t k = l.per_query ? u - q0 * l.K : u;  // the column of every query in the group
    const int nq = static_cast<int>(std::min<int64_t>(grp.G, v.Nq - q0));
    const int64_t start = l.start(u), length = l.length(u);
    const int64_t tiles = (length + kCols - 1) / kCols;
    float score = 0;  // thread t < nq: query q0 + t, summed over its chunks in order

    for (int chunk = 0; chunk < grp.chunks; ++chunk) {
      // Rows holding tokens of real queries (a multiple of 16), as in maxsim_mma.cuh.
      const int64_t last_rows = std::min<int64_t>(grp.seg, v.Lq - int64_t(chunk) * grp.seg);
      const int real_rows = (nq - 1) * grp.seg + round_up(last_rows, kFrag);
      const int warp_real = (real_rows - wr * kWarpRows) / kFrag;
      const int m_tiles = warp_real < 0 ? 0 : (warp_real > kMTiles ? kMTiles : warp_real);
      RunningMax<float> m[kMTiles][2];  // rows 16 mi + g (+ 8 for [1]) of the warp, over its columns
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) m[mi][0] = m[mi][1] = empty_running_max<float>();
      __syncthreads();  // the previous chunk's row table, tiles, maxima and contributions are no longer read
      if (tid < kRows) {
        const int r = tid, rq = r / grp.seg;
        const int64_t ri = int64_t(chunk) * grp.seg + (r - rq * grp.seg);
        q_src[r] = r < real_rows && ri < v.Lq ? v.Q + ((q0 + rq) * v.Lq + ri) * q_row_bytes : nullptr;
      }
      // Step s stages feature chunk s % feature_chunks of doc tile s / feature_chunks (and that
      // chunk of the query rows, which with one chunk stay staged across the doc's tiles) into
      // buffer s % stages, and the tile's column masks and scales with its first chunk.
      const int64_t steps = tiles * feature_chunks;
      const auto start_step = [&](int64_t s) {
        const int64_t t = s / feature_chunks, fc = s - t * feature_chunks, f0 = fc * width;
        const int slot = static_cast<int>(s % stages);
        const int64_t first = start + t * kCols, tokens = std::min<int64_t>(kCols, length - t * kCols);
        char* d_tile = d_tiles + slot * kCols * stride;
        if (feature_chunks > 1 || s == 0) {
          stage<Op>(q_tile, stride, real_rows, v.dim, f0, q.format, vec_loads, walk, [&](int r) { return q_src[r]; },
                    beyond);
        }
        if (std::is_same_v<Op, HalfOperands> && residual_docs) {  // decoded to fp16 (stages is 1)
          if (fc == 0) {
            residual_norms(residual, first, tokens, v.dim, inv_norm);
            __syncthreads();  // (residual_docs is the same in the block)
          }
          stage_residual(d_tile, stride, residual, first, tokens, v.dim, f0, inv_norm, walk);
        } else {
          stage<Op>(d_tile, stride, kCols, v.dim, f0, d.format, vec_loads, walk,
                    [&](int r) -> const char* { return r < tokens ? v.D + (first + r) * d_row_bytes : nullptr; },
                    beyond);
        }
        if (fc == 0) {
          if (warp == 0) mma::column_masks(v, first, tokens, col_mask[slot]);
          if (tid < kCols) col_scale[slot][tid] = tid >= tokens ? 0.0f : d.scale != nullptr ? d.scale[first + tid] : 1.0f;
        }
      };
      // One cp.async batch per step, empty past the last; stages - 1 steps ahead of the one
      // multiplied, so waiting until stages - 1 batches are in flight means step s has landed.
      if (stages > 1) {
        __syncthreads();  // the row table is written
        for (int p = 0; p < stages - 1; ++p) {
          if (p < steps) start_step(p);
          __pipeline_commit();
        }
      }
      for (int64_t t = 0; t < tiles; ++t) {
        typename Op::acc_t acc[kMTiles][kNTiles][4] = {};
        for (int64_t fc = 0; fc < feature_chunks; ++fc) {
          const int64_t s = t * feature_chunks + fc;
          // The row table is written; the buffers step s + stages - 1 reuses (step s - 1's, and
          // with them tile t - 1's masks and scales) are no longer read.
          __syncthreads();
          if (s + stages - 1 < steps) start_step(s + stages - 1);
          __pipeline_commit();
          if (stages > 1) {
            __pipeline_wait_prior(kStages - 1);
          } else {
            __pipeline_wait_prior(0);
          }
          __syncthreads();  // every thread's copies and stores of step s are in place
          const char* b_rows = d_tiles + static_cast<int>(s % stages) * kCols * stride + b_offset;
          // A branch per chunk, none inside the loop over features (m_tiles is the same in the warp).
          if (m_tiles == kMTiles) {
            multiply<Op, kMTiles>(q_tile + a_offset, b_rows, stride, width_bytes, acc);
          } else if (m_tiles == 1) {
            multiply<Op, 1>(q_tile + a_offset, b_rows, stride, width_bytes, acc);
          }  // else this warp's rows hold no real query token
        }
        // acc[mi][ni][e] is row g (e < 2) or g + 8 of m16 tile mi, column 8 ni + 2 tig + e % 2 of
        // the warp's 32: each lane visits its columns in increasing j. The similarity is the dot
        // product (int8: exact, in float32) times the doc token's scale.
        const int slot = static_cast<int>(t * feature_chunks % stages);  // where the tile's first chunk went
        const uint32_t bits = col_mask[slot][wc] >> (2 * tig);
        const int32_t j_first = static_cast<int32_t>(t * kCols + wc * kWarpCols + 2 * tig);
#pragma unroll
        for (int ni = 0; ni < kNTiles; ++ni) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if ((bits >> (8 * ni + e)) & 1u) {
              const float s = col_scale[slot][wc * kWarpCols + 8 * ni + 2 * tig + e];
#pragma unroll
              for (int mi = 0; mi < kMTiles; ++mi) {
                m[mi][0].update(static_cast<float>(acc[mi][ni][e]) * s, j_first + 8 * ni + e);
                m[mi][1].update(static_cast<float>(acc[mi][ni][2 + e]) * s, j_first + 8 * ni + e);
              }
            }
          }
        }
      }
      // Each row's max over the block's columns (the quad's lanes, then the two column warps).
      argmax_rows.gather(m, wr, wc, g, tig);
      if (tid < kRows) {
        // Row r holds token i of query q0 + r / seg, or zeros past the query's end.
        const int row = tid, qr = row / grp.seg;
        const int64_t i = int64_t(chunk) * grp.seg + (row - qr * grp.seg);
        RunningMax<float> best = argmax_rows.row(row);
        float c = 0;
        if (row < real_rows && i < v.Lq) {
          if (!v.query_token_valid(q0 + qr, i)) best.index = -1;
          if constexpr (kWriteArgmax) argmax[v.argmax_index(q0 + qr, k, i)] = best.index;
          if (best.index >= 0) c = q.scale != nullptr ? best.value * q.scale[(q0 + qr) * v.Lq + i] : best.value;
        }
        contrib[row] = c;
      }
      __syncthreads();
      if (tid < nq) {
        const int first = tid * grp.seg;
        for (int r = first; r < first + grp.seg; ++r) score += contrib[r];
      }
    }
    if (tid < nq) scores[(q0 + tid) * l.K + k] = score;
  }
  if (in_half_range != nullptr) grid_none(beyond, grid_words, in_half_range);  // the same in the grid
}

}  // namespace kdops::cuda::tensor_core::serving
