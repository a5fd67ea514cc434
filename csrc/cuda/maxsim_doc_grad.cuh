// MaxSim dD from the saved argmax, parallel and deterministic (no float atomics, no serial loop
// over a doc's readers in one thread block):
//   dD_u[j] = sum over the doc's readers (q, k) and query tokens i with argmax[q, k, i] == j of
//             w[q, k] * Q[q, i]                                  (the gradient of common/maxsim.h)
//
// Destination-owned: each warp owns 8 consecutive rows j of one doc and scans the doc's
// (reader, token) entries 32 at a time (a ballot finds those whose argmax falls in its rows), then
// adds the hits in entry order, lanes over the features, into fp32 (fp64) sums in shared memory
// that only the owning lane touches. Every row gets its contributions in the same order on every
// run, whatever the scheduling; each row is written exactly once (so the output needs no zero
// fill) and straight in the input dtype.
//
// Cost: each entry is compared once per 8 rows of its doc (num_readers * Lq * Ld / 8 compares
// per doc, warp-wide), the hits cost d/32 FMAs per lane. A saved index outside [0, length) never
// matches a row: a bad argmax is skipped, never written out of bounds.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/maxsim.h"

namespace kdops::cuda::doc_grad {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerWarp = 8;  // short hit chains per warp (each hit waits on a Q row load)
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
// Features summed per pass: kRowsPerWarp rows x kFeatures sums = 4 KB per warp, 16 KB per block.
template <typename acc_t>
constexpr int features_per_pass() { return 512 / static_cast<int>(sizeof(acc_t)); }

// Row tiles a doc is split into by blockIdx (a block strides over its doc's tiles when the doc is
// longer than tiles * kRowsPerBlock, as packed docs of unknown length can be).
inline int64_t row_tiles(const MaxSimLayout& l, int64_t total_tokens) {
  const int64_t typical = l.offsets != nullptr ? total_tokens / std::max<int64_t>(l.num_docs, 1) : l.Ld;
  return std::max<int64_t>(1, (typical + kRowsPerBlock - 1) / kRowsPerBlock);
}

// Grid: num_docs * tiles blocks; block b takes doc b / tiles and its row tiles b % tiles, + tiles, ...
// Occupancy hint of 4 blocks: without it ptxas caps the fp64 instance at 56 registers and spills.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 4)
    maxsim_doc_grad_kernel(MaxSimView<scalar_t> v, int64_t tiles, const acc_t* w,
                           const int32_t* argmax, scalar_t* dD) {
  constexpr int kFeatures = features_per_pass<acc_t>();
  alignas(16) __shared__ acc_t sums[kWarps][kRowsPerWarp][kFeatures];
  const MaxSimLayout& l = v.layout;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  acc_t(*acc)[kFeatures] = sums[warp];  // this warp's rows; lane owns features lane, lane + 32, ...

  for (int64_t b = blockIdx.x; b < l.num_docs * tiles; b += gridDim.x) {
    const int64_t u = b / tiles;
    const int64_t start = l.start(u), length = l.length(u);
    const int64_t entries = l.num_readers(u, v.Nq) * v.Lq;
    for (int64_t tile = b - u * tiles; tile * kRowsPerBlock < length; tile += tiles) {
      const int64_t row0 = tile * kRowsPerBlock + warp * kRowsPerWarp;  // warp-uniform
      if (row0 >= length) continue;
      const int rows = static_cast<int>(std::min<int64_t>(kRowsPerWarp, length - row0));
      for (int64_t c0 = 0; c0 < v.dim; c0 += kFeatures) {
        const int width = static_cast<int>(std::min<int64_t>(kFeatures, v.dim - c0));
        for (int r = 0; r < rows; ++r)
          for (int c = lane; c < width; c += 32) acc[r][c] = acc_t(0);
        // This lane's entry e = n * Lq + i (reader n, query token i), advanced by 32 per step
        // without a division.
        int64_t n = lane / v.Lq, i = lane - n * v.Lq;
        for (int64_t e0 = 0; e0 < entries; e0 += 32) {
          int64_t q, k;
          l.reader(u, n, q, k);
          const int32_t j = e0 + lane < entries ? argmax[v.argmax_index(q, k, i)] : -1;
          unsigned hits = __ballot_sync(0xffffffffu, j >= row0 && j < row0 + rows);
          while (hits != 0) {  // warp-uniform: the hits in entry order
            const int src = __ffs(hits) - 1;
            hits &= hits - 1;
            const int r = static_cast<int>(__shfl_sync(0xffffffffu, j, src) - row0);
            // Reader and token of the hit (below 2^31: int32 shuffles, fewer registers).
            const int64_t hn = __shfl_sync(0xffffffffu, static_cast<int32_t>(n), src);
            const int64_t hi = __shfl_sync(0xffffffffu, static_cast<int32_t>(i), src);
            int64_t hq, hk;
            l.reader(u, hn, hq, hk);
            const acc_t weight = w[hq * l.K + hk];
            const scalar_t* token = v.Q + (hq * v.Lq + hi) * v.dim + c0;
            for (int c = lane; c < width; c += 32) acc[r][c] += weight * static_cast<acc_t>(token[c]);
          }
          for (i += 32; i >= v.Lq; i -= v.Lq) ++n;
        }
        for (int r = 0; r < rows; ++r) {
          scalar_t* out = dD + (start + row0 + r) * v.dim + c0;
          for (int c = lane; c < width; c += 32) out[c] = static_cast<scalar_t>(acc[r][c]);
        }
      }
    }
  }
}

}  // namespace kdops::cuda::doc_grad
