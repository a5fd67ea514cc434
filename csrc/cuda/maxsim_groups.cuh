// The work split both tensor-core MaxSim forwards share (maxsim_mma.cuh for fp16/bf16,
// maxsim_tensor_core.cuh for TF32): one block takes a doc u and a group of G whole queries that
// read it (all pairs and packed: G = kRows / (Lq rounded up to 16) queries, so each doc tile is
// staged once for several queries; per query: G = 1, its only reader). The group's query tokens
// are kRows shared-memory rows, each query a segment of `seg` rows (zero-padded); a query longer
// than kRows is taken in chunks of kRows rows.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/maxsim.h"

#include "sim/portable.h"

namespace kdops::cuda::tensor_core {

constexpr int kRows = 64;  // query-token rows per block
constexpr int kFrag = 16;  // rows per MMA tile, and the k (features) of a 16-bit MMA step

KDOPS_HD int round_up(int64_t x, int to) { return static_cast<int>((x + to - 1) / to * to); }

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

// Whether 16-byte loads apply: every token row starts 16-byte aligned.
template <typename T>
bool vector_loads(int64_t dim, const void* Q, const void* D) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return dim % (16 / sizeof(T)) == 0 && aligned(Q) && aligned(D);
}

}  // namespace kdops::cuda::tensor_core
