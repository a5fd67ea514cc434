// MaxSim dD from the saved argmax, parallel and deterministic (no float atomics, no serial loop
// over a doc's readers in one thread block):
//   dD_u[j] = sum over the doc's readers (q, k) and query tokens i with argmax[q, k, i] == j of
//             w[q, k] * Q[q, i]                                  (the gradient of common/maxsim.h)
//
// Destination-owned: each warp owns a group of 8 consecutive rows j of one doc and scans the
// doc's (reader, token) entries 32 at a time (a ballot finds those whose argmax falls in its
// rows), then adds the hits in entry order, lanes over the features, into fp32 (fp64) sums in
// shared memory that only the owning lane touches. Hits are taken kHitsInFlight at a time: their
// weights and Q rows are loaded before the first is added, so the warp waits on one load latency
// per kHitsInFlight hits instead of one per hit. Every row gets its contributions in the same
// order on every run, whatever the scheduling.
//
// Hot rows. When many entries land on one doc token (ColBERT's [MASK]-expanded queries pile
// their argmax onto few tokens) one warp would add them all in turn. So when a doc has more
// entries than kHotHits (a shape fact the host sees: `slices` > 1), a first kernel counts each
// row's hits (integer atomics: the counts are exact whatever the order), and a row group with
// more than kHotHits hits is split: slice s of `slices` blocks scans only its fixed contiguous
// part of the entries, [s * E / slices, (s + 1) * E / slices), and writes its sums to
// partial[s]; a third kernel adds partial[0], partial[1], ... in that order into the group's rows
// of dD. Groups under the threshold are done whole by slice 0, straight into dD. Either way the
// terms and their order depend only on the inputs: results are bit-identical across runs and
// schedules.
//
// Packed partials. A hot group holds more than kHotHits of its doc's E entries, so a doc has at
// most E / (kHotHits + 1) hot groups (hot_per_doc: from shapes alone, no host sync). The k-th hot
// group of doc u (in row order, k counted from the hit counts by every warp of the group alike)
// owns slot u * hot_per_doc + k of the partials, [slices, slots, kRowsPerWarp, d], and part 0
// records its rows there for the combine (rows_of). Partials thus cost slices x 8 x hot_per_doc
// rows per doc, not slices x D. Where invalid packed offsets overlap two docs, a group's count can
// include another doc's hits and k can pass the bound: that group is done whole (k fits always
// with valid offsets).
//
// Each dD row is written exactly once (so the output needs no zero fill), in the input dtype.
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
constexpr int kRowsPerWarp = 8;  // a row group
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kHitsInFlight = 4;
constexpr int64_t kHotHits = 256;  // hits a warp adds alone; a group with more is split
constexpr int64_t kMaxSlices = 4;  // parts a hot group's entries are split into
// Features summed per pass: kRowsPerWarp rows x kFeatures sums = 4 KB per warp, 16 KB per block.
template <typename acc_t>
constexpr int features_per_pass() { return 512 / static_cast<int>(sizeof(acc_t)); }

// Row tiles a doc is split into by blockIdx (a block strides over its doc's tiles when the doc is
// longer than tiles * kRowsPerBlock, as packed docs of unknown length can be).
inline int64_t row_tiles(const MaxSimLayout& l, int64_t total_tokens) {
  const int64_t typical = l.offsets != nullptr ? total_tokens / std::max<int64_t>(l.num_docs, 1) : l.Ld;
  return std::max<int64_t>(1, (typical + kRowsPerBlock - 1) / kRowsPerBlock);
}

// Parts a hot group's entries are split into: 1 (no split, no counts) when no group can pass
// kHotHits, since a doc has num_readers * Lq entries in all.
inline int64_t slices_for(const MaxSimLayout& l, int64_t Nq, int64_t Lq) {
  const int64_t entries = (l.per_query ? 1 : Nq) * Lq;
  return std::min<int64_t>(kMaxSlices, std::max<int64_t>(1, (entries + kHotHits - 1) / kHotHits));
}

// Hot groups a doc can have (slots of the partials per doc): more than kHotHits of the doc's
// entries each, and no more than the doc's groups. Ld is 0 when packed (a doc then has at most T
// rows); not `offsets`, which the host's layout leaves unset: host and device must agree.
inline int64_t hot_groups_per_doc(const MaxSimLayout& l, int64_t Nq, int64_t Lq) {
  const int64_t entries = (l.per_query ? 1 : Nq) * Lq, rows = l.Ld > 0 ? l.Ld : l.T;
  return std::min(entries / (kHotHits + 1), (rows + kRowsPerWarp - 1) / kRowsPerWarp);
}

// counts[row] = how many saved indices name D row `row` (over every (q, k, i)).
template <typename scalar_t>
__global__ void __launch_bounds__(256) maxsim_count_hits_kernel(MaxSimView<scalar_t> v, const int32_t* argmax,
                                                                int32_t* counts) {
  const MaxSimLayout& l = v.layout;
  const int64_t n = v.Nq * l.K * v.Lq;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t qk = e / v.Lq, q = qk / l.K, doc = l.doc(q, qk - q * l.K);
    const int32_t j = argmax[e];
    if (argmax_in_doc(j, l.length(doc))) atomicAdd(counts + l.start(doc) + j, 1);
  }
}

// Whether the group of `rows` D rows from `first` has more than kHotHits hits (counts: nullptr
// when no group can).
KDOPS_HD bool is_hot(const int32_t* counts, int64_t first, int rows) {
  if (counts == nullptr) return false;
  int64_t hits = 0;
  for (int r = 0; r < rows; ++r) hits += counts[first + r];
  return hits > kHotHits;
}

// How many hot groups of the doc (first row `start`) come before its group at row0: the rank that
// names the group's slot. Every lane counts alike (the counts are read as broadcasts; no warp
// collective), only for hot groups: row0 count loads, against the more than kHotHits hits such a
// group adds.
KDOPS_HD int64_t hot_rank(const int32_t* counts, int64_t start, int64_t row0) {
  int64_t rank = 0;
  for (int64_t first = 0; first < row0; first += kRowsPerWarp) rank += is_hot(counts, start + first, kRowsPerWarp);
  return rank;
}

// Calls f(start, row0, rows) for each row group of this warp: grid of num_docs * tiles items,
// item b takes doc b / tiles and its row tiles b % tiles, + tiles, ...; warp w of the block the
// w-th group of a tile. start: the doc's first D row; row0: the group's first row in the doc.
template <typename F>
__device__ void for_each_group(const MaxSimLayout& l, int64_t tiles, int64_t item, int warp, F&& f) {
  const int64_t u = item / tiles;
  const int64_t start = l.start(u), length = l.length(u);
  for (int64_t tile = item - u * tiles; tile * kRowsPerBlock < length; tile += tiles) {
    const int64_t row0 = tile * kRowsPerBlock + warp * kRowsPerWarp;  // warp-uniform
    if (row0 < length) f(u, start, row0, static_cast<int>(std::min<int64_t>(kRowsPerWarp, length - row0)));
  }
}

// Grid: num_docs * tiles * slices blocks; block b takes item b / slices (for_each_group) and
// slice b % slices. When slices > 1: counts [T] from maxsim_count_hits_kernel; rows_of
// [slots * kRowsPerWarp] filled with -1, set to the D rows of the used slots; partial
// [slices, slots * kRowsPerWarp, d] acc_t, slots = num_docs * hot_per_doc.
// Occupancy hint of 4 blocks: without it ptxas caps the fp64 instance at 56 registers and spills.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 4)
    maxsim_doc_grad_kernel(MaxSimView<scalar_t> v, int64_t tiles, int64_t slices, int64_t hot_per_doc,
                           const acc_t* w, const int32_t* argmax, const int32_t* counts, int64_t* rows_of,
                           scalar_t* dD, acc_t* partial) {
  constexpr int kFeatures = features_per_pass<acc_t>();
  alignas(16) __shared__ acc_t sums[kWarps][kRowsPerWarp][kFeatures];
  const MaxSimLayout& l = v.layout;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  acc_t(*acc)[kFeatures] = sums[warp];  // this warp's rows; lane owns features lane, lane + 32, ...

  for (int64_t b = blockIdx.x; b < l.num_docs * tiles * slices; b += gridDim.x) {
    const int64_t s = b % slices;
    for_each_group(l, tiles, b / slices, warp, [&](int64_t u, int64_t start, int64_t row0, int rows) {
      const bool hot = is_hot(counts, start + row0, rows);  // warp-uniform
      const int64_t rank = hot ? hot_rank(counts, start, row0) : 0;
      const bool split = hot && rank < hot_per_doc;
      if (!split && s > 0) return;  // slice 0 does the whole group
      const int64_t slot_row = (u * hot_per_doc + rank) * kRowsPerWarp;  // of the partials, when split
      if (split && s == 0 && lane < rows) rows_of[slot_row + lane] = start + row0 + lane;  // for the combine
      const int64_t entries = l.num_readers(u, v.Nq) * v.Lq;
      const int64_t first = split ? s * entries / slices : 0, end = split ? (s + 1) * entries / slices : entries;
      for (int64_t c0 = 0; c0 < v.dim; c0 += kFeatures) {
        const int width = static_cast<int>(std::min<int64_t>(kFeatures, v.dim - c0));
        for (int r = 0; r < rows; ++r)
          for (int c = lane; c < width; c += 32) acc[r][c] = acc_t(0);
        // This lane's entry e = n * Lq + i (reader n, query token i), advanced by 32 per step
        // without a division.
        int64_t n = (first + lane) / v.Lq, i = first + lane - n * v.Lq;
        for (int64_t e0 = first; e0 < end; e0 += 32) {
          int64_t q, k;
          l.reader(u, n, q, k);
          const int32_t j = e0 + lane < end ? argmax[v.argmax_index(q, k, i)] : -1;
          unsigned hits = __ballot_sync(0xffffffffu, j >= row0 && j < row0 + rows);
          while (hits != 0) {  // warp-uniform: the hits in entry order, kHitsInFlight at a time
            int r[kHitsInFlight];
            acc_t weight[kHitsInFlight];
            const scalar_t* token[kHitsInFlight];
#pragma unroll
            for (int h = 0; h < kHitsInFlight; ++h) {
              const int src = hits != 0 ? __ffs(hits) - 1 : 0;
              r[h] = hits != 0 ? static_cast<int>(__shfl_sync(0xffffffffu, j, src) - row0) : -1;
              hits &= hits - 1;
              // Reader and token of the hit (below 2^31: int32 shuffles, fewer registers).
              const int64_t hn = __shfl_sync(0xffffffffu, static_cast<int32_t>(n), src);
              const int64_t hi = __shfl_sync(0xffffffffu, static_cast<int32_t>(i), src);
              int64_t hq, hk;
              l.reader(u, hn, hq, hk);
              weight[h] = r[h] >= 0 ? w[hq * l.K + hk] : acc_t(0);
              token[h] = v.Q + (hq * v.Lq + hi) * v.dim + c0;
            }
            for (int c = lane; c < width; c += 32) {
              acc_t x[kHitsInFlight];
#pragma unroll
              for (int h = 0; h < kHitsInFlight; ++h) x[h] = r[h] >= 0 ? static_cast<acc_t>(token[h][c]) : acc_t(0);
#pragma unroll
              for (int h = 0; h < kHitsInFlight; ++h)
                if (r[h] >= 0) acc[r[h]][c] += weight[h] * x[h];
            }
          }
          for (i += 32; i >= v.Lq; i -= v.Lq) ++n;
        }
        for (int r = 0; r < rows; ++r) {
          const int64_t row = start + row0 + r;
          if (split) {
            acc_t* out = partial + ((s * l.num_docs * hot_per_doc) * kRowsPerWarp + slot_row + r) * v.dim + c0;
            for (int c = lane; c < width; c += 32) out[c] = acc[r][c];
          } else {
            scalar_t* out = dD + row * v.dim + c0;
            for (int c = lane; c < width; c += 32) out[c] = static_cast<scalar_t>(acc[r][c]);
          }
        }
      }
    });
  }
}

// dD of the rows of split groups: for each used slot row p (rows_of[p] >= 0), partial[0][p] +
// partial[1][p] + ... in slice order. A warp per slot row, lanes over the features.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    maxsim_doc_grad_combine_kernel(int64_t slot_rows, int64_t dim, int64_t slices, const int64_t* rows_of,
                                   const acc_t* partial, scalar_t* dD) {
  const int lane = threadIdx.x % 32;
  for (int64_t p = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; p < slot_rows; p += int64_t(gridDim.x) * kWarps) {
    const int64_t row = rows_of[p];
    if (row < 0) continue;
    for (int64_t c = lane; c < dim; c += 32) {
      acc_t sum = partial[p * dim + c];
      for (int64_t s = 1; s < slices; ++s) sum += partial[(s * slot_rows + p) * dim + c];
      dD[row * dim + c] = static_cast<scalar_t>(sum);
    }
  }
}

}  // namespace kdops::cuda::doc_grad
