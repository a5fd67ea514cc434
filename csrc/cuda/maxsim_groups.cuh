// The work split both tensor-core MaxSim forwards share (maxsim_mma.cuh for fp16/bf16,
// maxsim_tensor_core.cuh for TF32): one block takes a doc u and a group of G whole queries that
// read it (all pairs and packed: G = kRows / (Lq rounded up to 16) queries, so each doc tile is
// staged once for several queries; per query: G = 1, its only reader). The group's query tokens
// are kRows shared-memory rows, each query a segment of `seg` rows (zero-padded); a query longer
// than kRows is taken in chunks of kRows rows, in series by one block, or, when the items are too
// few to fill the GPU, over several blocks (split_chunks) whose per-chunk partial sums a second
// pass adds in chunk order.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/maxsim.h"

#include "sim/portable.h"

namespace kdops::cuda::tensor_core {

constexpr int kRows = 64;  // query-token rows per block
constexpr int kFrag = 16;  // rows per MMA tile, and the k (features) of a 16-bit MMA step

KDOPS_HD int round_up(int64_t x, int to) { return static_cast<int>((x + to - 1) / to * to); }

// Work item `item`'s doc u, its output column k, and its nq queries q0, q0 + 1, ... (the last
// group of a doc may hold fewer than G).
struct Item {
  int64_t u, q0, k;
  int nq;
};

struct Groups {
  int seg;     // shared-memory rows per query (Lq rounded up to 16, at most kRows)
  int G;       // queries per block
  int chunks;  // row chunks per query (> 1 only when Lq > kRows)
  int64_t groups_per_doc;
  int64_t items;         // (doc, query group) pairs
  int splits;            // blocks per item, each taking chunks_per_split consecutive chunks
  int chunks_per_split;  // chunks when splits == 1

  KDOPS_HD int64_t blocks() const { return items * splits; }

  KDOPS_HD Item item(int64_t item, const MaxSimLayout& l, int64_t Nq) const {
    Item it;
    it.u = item / groups_per_doc;
    it.q0 = l.per_query ? it.u / l.K : (item - it.u * groups_per_doc) * G;
    it.k = l.per_query ? it.u - it.q0 * l.K : it.u;  // the column of every query in the group
    it.nq = static_cast<int>(std::min<int64_t>(G, Nq - it.q0));
    return it;
  }
};

inline Groups groups_for(int64_t Nq, int64_t Lq, const MaxSimLayout& l) {
  Groups g;
  g.seg = Lq >= kRows ? kRows : round_up(std::max<int64_t>(Lq, 1), kFrag);
  g.G = l.per_query ? 1 : kRows / g.seg;
  g.chunks = static_cast<int>((Lq + g.seg - 1) / g.seg);
  g.groups_per_doc = l.per_query ? 1 : (Nq + g.G - 1) / g.G;
  g.items = l.per_query ? Nq * l.K : l.num_docs * g.groups_per_doc;
  g.splits = 1;
  g.chunks_per_split = g.chunks;
  return g;
}

// Splits each item's chunks over blocks when that shortens the busiest SM's work. With `per`
// chunks a block, the items x ceil(chunks / per) blocks spread over `sms` SMs, each running up to
// `resident` blocks at once; the busiest SM takes n = ceil(blocks / sms) blocks, in about
// n x per / min(resident, n) chunk times (a lone block leaves the SM's schedulers mostly idle).
// ColPali's one 1024-token query against 100 docs: 100 blocks of 16 chunks, one per SM, become
// 1,600 blocks of one. Ties keep fewer blocks; a single chunk never splits. A split costs a second
// launch (the chunk sum) and chunks x pairs floats of partial sums, and no more staging: a block
// restages the doc for every chunk either way.
inline Groups split_chunks(Groups g, int64_t sms, int resident) {
  double best = -1;
  for (int per = g.chunks; per >= 1; --per) {
    const int splits = (g.chunks + per - 1) / per;
    const int64_t n = (g.items * splits + sms - 1) / sms;
    const double time = double(n) * per / double(std::min<int64_t>(resident, std::max<int64_t>(n, 1)));
    if (best < 0 || time < best) {
      best = time;
      g.splits = splits;
      g.chunks_per_split = per;
    }
  }
  return g;
}

// Whether 16-byte loads apply: every token row starts 16-byte aligned.
template <typename T>
bool vector_loads(int64_t dim, const void* Q, const void* D) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return dim % (16 / sizeof(T)) == 0 && aligned(Q) && aligned(D);
}

}  // namespace kdops::cuda::tensor_core
