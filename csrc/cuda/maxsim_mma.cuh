// MaxSim forward for fp16/bf16 on tensor cores: score(q, k) = sum_i max_j <Q[q, i], D_k[j]>
// (common/maxsim.h), the similarities computed by mma.sync m16n8k16 with fp32 accumulation, fed
// by ldmatrix from shared memory (mma_ptx.cuh), and never stored anywhere: each lane takes the
// row max directly on its accumulator registers.
//
// Work split (maxsim_groups.cuh): a block takes a doc and a group of whole queries, kRows = 64
// query-token rows; only the m16 tiles that hold rows of real queries are computed. A query longer
// than kRows is taken in chunks of kRows rows: all of them in series, or, split (few items: long
// queries against few docs), consecutive chunks per block, each chunk's sum written to a partial
// buffer that maxsim_chunk_sum_kernel (maxsim_kernels.cu) adds up in chunk order. The doc
// streams through shared memory kCols = 64 tokens at a time in a kStages-deep cp.async pipeline
// (16-byte copies; rows not 16-byte aligned are staged by plain loads, without the overlap). Four
// warps in 2 x 2 each multiply 32 query rows with 32 of the tile's doc tokens: per 16 features,
// two ldmatrix.x4 for A (one per m16 tile), two ldmatrix.x4 for B (two n8 tiles each) and 8 mma.
// Staging addresses advance by fixed steps, with no division per copy: the query rows' by a step
// and a carry (Walk), the doc rows' by a constant (stage_doc_rows).
//
// Shared memory: rows padded by 8 elements (tile_stride), so each ldmatrix phase's 8 row
// addresses fall in 8 distinct 16-byte bank groups (no swizzle needed). Doc masks: warp 0 turns
// each tile's d_mask bytes and its end into two 32-bit column masks as the tile is staged; the
// fold tests bits of one register instead of loading a byte per column, and a warp whose 32
// columns are all valid (every tile but a doc's last, without d_mask) skips the test.
//
// The fold (fold_tile): a row's max over a lane's 8 columns of a tile is a tree of max.NaN
// (NaN above every number, masked columns as -inf). Without an argmax (ValueMax) that is all; with
// one (IndexMax) the index is searched only where a row's max rises. Determinism and ties: lane
// (g, tig) of a warp holds columns 2 tig, 2 tig + 1 of each n8 tile for rows g and g + 8 of each
// m16 tile (the PTX accumulator layout); its running max per row is what visiting its columns in
// increasing j and keeping the first maximum (RunningMax::update) gives. The quad's four lanes,
// then the two column warps, merge value first, then the lower index (RunningMax::merge): the
// argmax is the first maximal doc token, as on the CPU. Scores add the query's rows in row order; no
// atomics. Masks: a masked or past-the-end doc token never enters the max; a masked query token
// gets argmax -1 and adds 0; zero-padded rows and features add exact zeros to every product.
// A score is the sum over its chunks, in chunk order, of each chunk's rows summed in row order
// from 0, whether one block adds them or the chunk sum does: the same additions in the same
// order, so split and unsplit launches give the same bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/maxsim.h"
#include "cuda/maxsim_groups.cuh"
#include "cuda/mma_ptx.cuh"

#include "sim/portable.h"

namespace kdops::cuda::tensor_core::mma {

constexpr int kCols = 64;      // doc tokens per tile
constexpr int kThreads = 128;  // 4 warps, 2 x 2: warp (wr, wc) takes rows 32 wr.., tile columns 32 wc..
constexpr int kWarpRows = 32, kWarpCols = 32;
constexpr int kMTiles = kWarpRows / kFrag;  // m16 tiles per warp
constexpr int kNTiles = kWarpCols / 8;      // n8 tiles per warp
constexpr int kStages = 3;                  // doc tiles staged ahead (the pipeline's depth)
constexpr int kVec = 8;                     // 16-bit elements per 16-byte copy
constexpr int kMinBlocks = 4;               // resident blocks per SM the launch bounds ask for
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
static_assert(2 * kWarpRows == kRows && 2 * kWarpCols == kCols && kThreads == 4 * 32, "2 x 2 warps cover the tile");
static_assert(kWarpCols == 32, "a warp's tile columns are the 32 bits of one column mask word");

// Shared-memory row stride in elements: the width (a multiple of 16) plus 8, an odd number of
// 16-byte units, which keeps rows 16-byte aligned and staggers them across the banks.
KDOPS_HD int tile_stride(int64_t dim) { return round_up(dim, kFrag) + kVec; }

// Dynamic shared memory: the query rows and kStages doc tiles, 2 bytes per element.
inline int64_t smem_bytes(int64_t dim) { return int64_t(kRows + kStages * kCols) * tile_stride(dim) * 2; }

template <typename scalar_t>
struct Operand;  // the mma's operand type for an input type
template <>
struct Operand<c10::Half> {
  using type = __half;
};
template <>
struct Operand<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// A thread's share of a grid of items (16-byte chunks or elements), per_row items a row: items
// threadIdx.x, threadIdx.x + kThreads, ... in row-major order. Each next (row, column) follows
// from the last by a fixed step and one carry, not by a division.
struct Walk {
  int per_row, step_row, step_col, first_row, first_col;
  __device__ explicit Walk(int items_per_row)
      : per_row(items_per_row), step_row(kThreads / items_per_row), step_col(kThreads % items_per_row),
        first_row(threadIdx.x / items_per_row), first_col(threadIdx.x % items_per_row) {}
  template <typename F>
  __device__ void over(int rows, F f) const {
    int r = first_row, c = first_col;
    while (r < rows) {
      f(r, c);
      r += step_row;
      c += step_col;
      if (c >= per_row) {
        c -= per_row;
        ++r;
      }
    }
  }
};

// Stages rows [0, rows) of a tile: row r from src_of(r) (nullptr: zeros), features past dim as
// zeros. vec (vector_loads): 16-byte cp.async copies, which land at the caller's wait; else plain
// element loads (walk: chunks or elements accordingly). The branch on vec is outside the loops.
template <typename RowSrc>
__device__ void stage(uint16_t* tile, int stride, int rows, int dim, bool vec, const Walk& walk, RowSrc src_of) {
  if (vec) {
    walk.over(rows, [&](int r, int c) {
      const uint16_t* src = src_of(r);
      const int col = c * kVec;
      uint16_t* dst = tile + r * stride + col;
      if (src != nullptr && col < dim) {
        __pipeline_memcpy_async(dst, src + col, 16);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      }
    });
  } else {
    walk.over(rows, [&](int r, int c) {
      const uint16_t* src = src_of(r);
      tile[r * stride + c] = src != nullptr && c < dim ? src[c] : uint16_t(0);  // 0 bits = +0.0
    });
  }
}

// The doc tile's cp.async path. Its rows are consecutive rows of D, so a thread copies one
// 16-byte column chunk (walk.first_col) of rows walk.first_row, + step_row, ...: the walk's own
// items where per_row divides kThreads (d = 128: 16 chunks a row, 8 rows of threads), and where
// it does not, the threads past the last whole row of threads copy nothing (there is always one:
// the shared memory smem_bytes needs bounds d, at most 54 chunks a row). Each copy's source
// and destination are the last one's plus a constant: per copy the cp.async, a 64-bit and a
// 32-bit add, the row count and its test (about 12 SASS instructions on sm_90, against 27 for the
// walk's step-and-carry, whose column changes from copy to copy). Rows from `tokens` on, and the
// padding chunk past d, are stored as zeros.
__device__ inline void stage_doc_rows(uint16_t* tile, int stride, const uint16_t* first_row, int dim, int tokens,
                                      const Walk& walk) {
  if (walk.first_row >= walk.step_row) return;
  const int src_step = walk.step_row * dim, dst_step = walk.step_row * stride;
  const uint16_t* src = first_row + (walk.first_row * dim + walk.first_col * kVec);
  uint16_t* dst = tile + (walk.first_row * stride + walk.first_col * kVec);
  int r = walk.first_row;
  if (walk.first_col * kVec < dim) {  // d is a multiple of kVec here (vector_loads)
    for (; r < tokens; r += walk.step_row, src += src_step, dst += dst_step) __pipeline_memcpy_async(dst, src, 16);
  }
  for (; r < kCols; r += walk.step_row, dst += dst_step) *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
}

// Warp 0: bit c of mask[h] says whether tile column 32 h + c is a valid doc token (before the
// doc's end and not masked out); h is the column half a warp column wc folds.
template <typename scalar_t>
__device__ void column_masks(const MaxSimView<scalar_t>& v, int64_t first, int64_t tokens, uint32_t* mask) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int c = kWarpCols * h + lane;
    const unsigned bits = __ballot_sync(0xffffffffu, c < tokens && v.doc_token_valid(first + c));
    if (lane == 0) mask[h] = bits;
  }
}

// Lane column c = 2 ni + e (0..7, increasing j) of a warp's tile columns: column 8 ni + 2 tig + e,
// whose accumulators are acc[mi][ni][e] (row g) and acc[mi][ni][2 + e] (row g + 8).
constexpr int column_offset(int c) { return 8 * (c / 2) + c % 2; }
constexpr uint32_t kLaneColumns = 0x03030303u;  // the bits column_offset(0..7) of a shifted mask

// The max of a row's values at the lane's 8 columns of a tile (masked ones already -inf), in
// common/maxsim.h's order (NaN above every number): max.NaN on a tree.
__device__ __forceinline__ float tile_max(const float (&x)[8]) {
  float y[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) y[c] = x[c];
#pragma unroll
  for (int w = 4; w >= 1; w /= 2) {
#pragma unroll
    for (int c = 0; c < w; ++c) y[c] = ptx::max_nan(y[c], y[c + w]);
  }
  return y[0];
}

// A row's max when only the score is wanted (no argmax written): the value alone, -inf before
// any valid column. Whether the row has seen a valid doc token does not depend on the row (it is
// a property of the columns), so the kernel keeps that once (doc_seen), not per row: a valid token
// whose similarity is -inf gives -inf, no token gives 0, as on the CPU.
struct ValueMax {
  float value;
  static __device__ ValueMax empty() { return {kNegInf}; }
  __device__ void fold(const float (&x)[8], bool, uint32_t, int32_t) { value = ptx::max_nan(value, tile_max(x)); }
  __device__ void merge_lane(int offset) { value = ptx::max_nan(value, __shfl_xor_sync(0xffffffffu, value, offset)); }
};

// A row's RunningMax, a tile at a time (argmax written). A tile's columns leave it as
// RunningMax::update taking them one by one in increasing j would: unchanged unless the lane has a
// valid column there and the tile's max t ranks above the running value (or none was seen yet);
// then t, at the first valid column t does not rank above (the first maximal index). Masked columns
// hold -inf, so they can only tie with a t of -inf, where every valid column is -inf too: the first
// valid column, from the mask bits. The index search runs only where the max rises. The value kept
// is t (max.NaN's canonical NaN for a NaN; accumulators start at +0 and never become -0, so there
// is no zero sign to keep); the argmax is exactly the sequential one.
struct IndexMax : RunningMax<float> {
  static __device__ IndexMax empty() { return {empty_running_max<float>()}; }
  // any_valid: the lane has a valid column in the tile; bits: its mask bits (bit column_offset(c)).
  __device__ void fold(const float (&x)[8], bool any_valid, uint32_t bits, int32_t j_first) {
    const float t = tile_max(x);
    if (any_valid && (index < 0 || ranks_above(t, value))) {
      int offset;
      if (t == kNegInf) {
        offset = __ffs(bits & kLaneColumns) - 1;
      } else {
        int first = 7;
#pragma unroll
        for (int c = 7; c >= 0; --c) {
          if (!ranks_above(t, x[c])) first = c;
        }
        offset = column_offset(first);
      }
      value = t;
      index = j_first + offset;
    }
  }
};

// Each of the block's kRows rows' argmax over the tile columns its lanes folded, for this kernel
// and maxsim_serving_mma.cuh, through part_* (the kernel's shared arrays: a row's max over each
// column warp). gather, from every thread of the block: thread tid is lane (g, tig) of warp (wr,
// wc) (the kernel's own values: recomputing them here costs registers, a spill on sm_90), and
// rows[mi][h] its running max (RunningMax or a Row derived from it) of row 16 mi + 8 h + g of the
// warp's rows over its columns of the warp's 32 (the accumulator layout); the quad's four lanes
// merge (xor 1, 2), lane tig = 0 writes the warp's max, and a barrier ends it. row(r), after
// gather: row r's two column halves merged (read where the caller uses it, which keeps the
// kernels' register counts). Every merge is RunningMax::merge, value first (NaN above every
// number), then the lower index: the argmax is the first maximal doc token, as on the CPU.
// part_* may be rewritten after the caller's next barrier.
struct RowArgmax {
  float (&part_value)[2][kRows];
  int32_t (&part_index)[2][kRows];

  template <typename Row>
  __device__ __forceinline__ void gather(Row (&rows)[kMTiles][2], int wr, int wc, int g, int tig) const {
    static_assert(std::is_base_of_v<RunningMax<float>, Row>, "a lane's row maxima are RunningMax");
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        RunningMax<float>& m = rows[mi][h];
#pragma unroll
        for (int offset = 1; offset < 4; offset *= 2) {
          const float other_value = __shfl_xor_sync(0xffffffffu, m.value, offset);
          const int32_t other_index = __shfl_xor_sync(0xffffffffu, m.index, offset);
          m.merge(other_value, other_index);
        }
        if (tig == 0) {
          const int row = wr * kWarpRows + mi * kFrag + 8 * h + g;
          part_value[wc][row] = m.value;
          part_index[wc][row] = m.index;
        }
      }
    }
    __syncthreads();
  }
  __device__ __forceinline__ RunningMax<float> row(int r) const {
    RunningMax<float> best{part_value[0][r], part_index[0][r]};
    best.merge(part_value[1][r], part_index[1][r]);
    return best;
  }
};

// One tile's accumulators folded into the lane's row maxima: rows 16 mi + g (h = 0) and + 8
// (h = 1) of its first kM m16 tiles. bits: the warp's column mask shifted by 2 tig (bit
// column_offset(c) for lane column c); all_valid: every one of the warp's 32 columns is valid (a
// full tile without d_mask's gaps; the same in the whole warp), when the masking is skipped.
template <int kM, typename Row>
__device__ __forceinline__ void fold_tile(float (&acc)[kM][kNTiles][4], bool all_valid, uint32_t bits,
                                          int32_t j_first, Row (&rows)[kMTiles][2]) {
  if (!all_valid) {
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      if (!((bits >> column_offset(c)) & 1u)) {
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
          for (int h = 0; h < 2; ++h) acc[mi][c / 2][2 * h + c % 2] = kNegInf;
        }
      }
    }
  }
  const bool any_valid = (bits & kLaneColumns) != 0u;
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float x[8];
#pragma unroll
      for (int c = 0; c < 8; ++c) x[c] = acc[mi][c / 2][2 * h + c % 2];
      rows[mi][h].fold(x, any_valid, bits, j_first);
    }
  }
}

// One warp's share of a doc tile: its first kM m16 tiles of query rows (A rows from a_rows, this
// lane's ldmatrix row) times its 32 doc tokens (B rows from b_rows), folded into the row maxima
// (fold_tile).
template <int kM, typename T, typename Row>
__device__ __forceinline__ void multiply_and_fold(const uint16_t* a_rows, const uint16_t* b_rows, int stride,
                                                  int width, bool all_valid, uint32_t bits, int32_t j_first,
                                                  Row (&rows)[kMTiles][2]) {
  float acc[kM][kNTiles][4] = {};
  for (int kk = 0; kk < width; kk += kFrag) {
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
      for (int ni = 0; ni < kNTiles; ++ni) ptx::mma_m16n8k16<T>(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
    }
  }
  fold_tile<kM>(acc, all_valid, bits, j_first, rows);
}

// kWriteArgmax false (no gradient wanted, argmax nullptr): only the scores are written. partial
// (grp.splits > 1, else nullptr): [chunks, Nq * K], each chunk's sum, instead of scores.
template <typename scalar_t, bool kWriteArgmax>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    maxsim_mma_kernel(MaxSimView<scalar_t> v, Groups grp, bool vec, float* scores, int32_t* argmax,
                      float* partial) {
  using T = typename Operand<scalar_t>::type;
  using Row = std::conditional_t<kWriteArgmax, IndexMax, ValueMax>;
  KDOPS_DYNAMIC_SMEM(uint16_t, smem);
  __shared__ const uint16_t* q_src[kRows];  // each query row's source row (nullptr: zeros)
  __shared__ uint32_t col_mask[kStages][2];  // column_masks of the tile in each stage
  __shared__ float part_value[2][kRows];     // each row's max over a column half (warp column wc)
  __shared__ int32_t part_index[2][kRows];
  alignas(16) __shared__ float contrib[kRows];  // each row's max (0 when masked or no token)
  [[maybe_unused]] const RowArgmax argmax_rows{part_value, part_index};
  const MaxSimLayout& l = v.layout;
  const int dim = static_cast<int>(v.dim), stride = tile_stride(dim), width = round_up(dim, kFrag);
  uint16_t* q_tile = smem;
  uint16_t* d_tiles = q_tile + kRows * stride;  // kStages buffers of kCols rows: tile t in t % kStages
  const uint16_t* Q = reinterpret_cast<const uint16_t*>(v.Q);
  const uint16_t* D = reinterpret_cast<const uint16_t*>(v.D);
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32, wr = warp / 2, wc = warp % 2;
  const int g = lane / 4, tig = lane % 4;  // the lane's row and column pair in the mma fragments
  const Walk walk(vec ? round_up(dim, kFrag) / kVec : round_up(dim, kFrag));
  // The lane's ldmatrix row (element offset in a tile). A, x4 per m16 tile: lanes 0-15 rows 0-15
  // at column 0, lanes 16-31 the same rows at column 8 (a[0..3]). B, x4 per two n8 tiles: lanes
  // 8i..8i+7 doc rows 8 (i / 2).. at column 8 (i % 2) (b[0..1] of the first tile, then the second's).
  const int a_offset = (wr * kWarpRows + lane % 16) * stride + 8 * (lane / 16);
  const int b_offset = (wc * kWarpCols + 8 * (lane / 16) + lane % 8) * stride + 8 * ((lane / 8) % 2);

  const int64_t pairs = v.Nq * l.K;
  for (int64_t block = blockIdx.x; block < grp.blocks(); block += gridDim.x) {
    const int64_t item = block / grp.splits;
    const int first_chunk = static_cast<int>(block - item * grp.splits) * grp.chunks_per_split;
    const int end_chunk = std::min(grp.chunks, first_chunk + grp.chunks_per_split);
    const Item it = grp.item(item, l, v.Nq);
    const int64_t u = it.u, q0 = it.q0, k = it.k;
    const int nq = it.nq;
    const int64_t start = l.start(u), length = l.length(u);
    const int64_t tiles = (length + kCols - 1) / kCols;
    const auto start_tile = [&](int64_t t) {  // stages tile t and its column masks
      const int slot = static_cast<int>(t % kStages);
      const int64_t first = start + t * kCols, tokens = std::min<int64_t>(kCols, length - t * kCols);
      if (vec) {
        stage_doc_rows(d_tiles + slot * kCols * stride, stride, D + first * v.dim, dim, static_cast<int>(tokens), walk);
      } else {
        stage(d_tiles + slot * kCols * stride, stride, kCols, dim, false, walk,
              [&](int r) -> const uint16_t* { return r < tokens ? D + (first + r) * v.dim : nullptr; });
      }
      if (warp == 0) column_masks(v, first, tokens, col_mask[slot]);
    };
    float score = 0;  // thread t < nq: query q0 + t, its chunks' sums added in order

    for (int chunk = first_chunk; chunk < end_chunk; ++chunk) {
      // Rows holding tokens of real queries (a multiple of 16): the group's full segments, and
      // the last query's tokens in this chunk rounded up to 16.
      const int64_t last_rows = std::min<int64_t>(grp.seg, v.Lq - int64_t(chunk) * grp.seg);
      const int real_rows = (nq - 1) * grp.seg + round_up(last_rows, kFrag);
      const int warp_real = (real_rows - wr * kWarpRows) / kFrag;  // the warp's m16 tiles with real rows
      const int m_tiles = warp_real < 0 ? 0 : (warp_real > kMTiles ? kMTiles : warp_real);
      Row m[kMTiles][2];  // rows 16 mi + g (+ 8 for [1]) of the warp, over its columns
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) m[mi][0] = m[mi][1] = Row::empty();
      [[maybe_unused]] bool doc_seen = false;  // ValueMax: whether the doc has a valid token (in a tile folded so far)
      __syncthreads();  // the previous chunk's tiles, row table, maxima and contributions are no longer read
      if (tiles > 0) {
        if (tid < kRows) {  // the row table: one division per row and chunk
          const int r = tid, rq = r / grp.seg;
          const int64_t ri = int64_t(chunk) * grp.seg + (r - rq * grp.seg);
          q_src[r] = r < real_rows && ri < v.Lq ? Q + ((q0 + rq) * v.Lq + ri) * v.dim : nullptr;
        }
        __syncthreads();
        stage(q_tile, stride, real_rows, dim, vec, walk, [&](int r) { return q_src[r]; });
        // One batch per tile (the query rows join tile 0's); empty batches past the last tile
        // keep the count, so waiting until kStages - 2 are in flight means tile t has landed.
        for (int s = 0; s < kStages - 1; ++s) {
          if (s < tiles) start_tile(s);
          __pipeline_commit();
        }
      }
      for (int64_t t = 0; t < tiles; ++t) {
        __pipeline_wait_prior(kStages - 2);
        // Every thread's copies of tile t have landed, and tile t - 1, whose buffer and masks
        // the next start_tile reuses, has been folded by every warp.
        __syncthreads();
        if (t + kStages - 1 < tiles) start_tile(t + kStages - 1);
        __pipeline_commit();
        const int slot = static_cast<int>(t % kStages);
        const uint16_t* b_rows = d_tiles + slot * kCols * stride + b_offset;
        const uint32_t word = col_mask[slot][wc];
        if constexpr (!kWriteArgmax) doc_seen = doc_seen || (col_mask[slot][0] | col_mask[slot][1]) != 0u;
        const bool all_valid = word == 0xffffffffu;
        const uint32_t bits = word >> (2 * tig);
        const int32_t j_first = static_cast<int32_t>(t * kCols + wc * kWarpCols + 2 * tig);
        // Branches per tile, none inside the loop over features (m_tiles and word are the same in
        // the warp).
        if (m_tiles == kMTiles) {
          multiply_and_fold<kMTiles, T>(q_tile + a_offset, b_rows, stride, width, all_valid, bits, j_first, m);
        } else if (m_tiles == 1) {
          multiply_and_fold<1, T>(q_tile + a_offset, b_rows, stride, width, all_valid, bits, j_first, m);
        }  // else this warp's rows hold no real query token
      }
      // Each row's max over the block's columns: the quad's lanes (xor 1, 2), then the two column
      // warps through part_*; with the argmax, RowArgmax.
      if constexpr (kWriteArgmax) {
        argmax_rows.gather(m, wr, wc, g, tig);
      } else {
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
#pragma unroll
            for (int offset = 1; offset < 4; offset *= 2) m[mi][h].merge_lane(offset);
            if (tig == 0) part_value[wc][wr * kWarpRows + mi * kFrag + 8 * h + g] = m[mi][h].value;
          }
        }
        __syncthreads();
      }
      if (tid < kRows) {
        // Row r holds token i of query q0 + r / seg, or zeros past the query's end.
        const int row = tid, qr = row / grp.seg;
        const int64_t i = int64_t(chunk) * grp.seg + (row - qr * grp.seg);
        float c = 0;
        if (row < real_rows && i < v.Lq) {
          if constexpr (kWriteArgmax) {
            RunningMax<float> best = argmax_rows.row(row);
            if (!v.query_token_valid(q0 + qr, i)) best.index = -1;
            argmax[v.argmax_index(q0 + qr, k, i)] = best.index;
            c = best.contribution();
          } else if (doc_seen && v.query_token_valid(q0 + qr, i)) {
            c = ptx::max_nan(part_value[0][row], part_value[1][row]);
          }
        }
        contrib[row] = c;
      }
      __syncthreads();
      if (tid < nq) {
        const int first = tid * grp.seg;
        float sum = 0;
        for (int r = first; r < first + grp.seg; ++r) sum += contrib[r];
        if (partial != nullptr) {
          partial[chunk * pairs + (q0 + tid) * l.K + k] = sum;
        } else {
          score += sum;
        }
      }
    }
    if (tid < nq && partial == nullptr) scores[(q0 + tid) * l.K + k] = score;
  }
}

// kSumThreads: the chunk sum's block size (maxsim_chunk_sum_kernel, maxsim_kernels.cu).
constexpr int kSumThreads = 256;

}  // namespace kdops::cuda::tensor_core::mma
