// The item loop the serving MaxSim CPU kernels share (maxsim_quantized_cpu.cpp,
// maxsim_residual_cpu.cpp): the (query, doc) pairs are cut into work items, each a block of whole
// queries against a run of columns; an item packs its query token rows into panels once, then
// folds each doc, a block of its tokens at a time, into the panels' running maxima and finishes
// the doc's column of scores: score(q, k) = sum over valid i, in order, of what the max of query
// token i adds (common/maxsim.h RunningMax: 0 when the doc has no valid token).
//
// A Policy (one per parallel task) says how rows are packed, folded and scaled:
//   int64_t rows() const                       query rows per panel
//   void pack(int64_t q0, int64_t q1)          the item's query token rows [q0 * Lq, q1 * Lq)
//   void fold(int64_t row, int64_t n, const bool* valid, int32_t first, float* best, int32_t* arg)
//       doc token rows [row, row + n) (tokens first .. first + n - 1 of their doc) into the
//       running max of every panel (panel p at best + p * rows(), arg + p * rows())
//   float contribution(int64_t q, int64_t i, float max) const   what that max adds to the score
//   static constexpr double kMacNs             a multiply-add's cost, for the parallel grain
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/maxsim_serving_inputs.h"
#include "cpu/parallel_grain.h"

namespace kdops::cpu {

constexpr int64_t kServingRowsPerItem = 256;     // query token rows per all-pairs item
constexpr int64_t kServingTokensPerItem = 4096;  // doc token rows per item (whole docs, at least one)
constexpr int64_t kServingBlockElems = 16384;    // doc elements decoded per fold (64 KiB float32)

template <typename MakePolicy>
void serving_forward(const ServingArgs& a, MakePolicy make_policy, float* scores, int32_t* argmax) {
  const MaxSimLayout& l = a.layout;
  const int64_t Nq = a.Nq, Lq = a.Lq, K = l.K, Ld = l.Ld;
  const int64_t queries_per_item = l.per_query ? 1 : std::max<int64_t>(1, kServingRowsPerItem / std::max<int64_t>(Lq, 1));
  const int64_t columns_per_item = std::clamp<int64_t>(kServingTokensPerItem / std::max<int64_t>(Ld, 1), 1, std::max<int64_t>(K, 1));
  const int64_t query_items = (Nq + queries_per_item - 1) / queries_per_item;
  const int64_t column_items = (K + columns_per_item - 1) / columns_per_item;
  const int64_t block = std::max<int64_t>(1, kServingBlockElems / a.dim);
  const MaxSimView<char> v = a.view(nullptr);  // the masks (the policies read the tokens)
  const double item_ns = decltype(make_policy())::kMacNs * static_cast<double>(queries_per_item * Lq) *
                         static_cast<double>(columns_per_item * Ld) * static_cast<double>(a.dim);
  at::parallel_for(0, query_items * column_items, parallel_grain(item_ns), [&](int64_t begin, int64_t end) {
    auto policy = make_policy();
    const int64_t rows = policy.rows();
    std::vector<float> best;
    std::vector<int32_t> arg;
    int64_t packed_q0 = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t q0 = (item / column_items) * queries_per_item, q1 = std::min(Nq, q0 + queries_per_item);
      const int64_t k0 = (item % column_items) * columns_per_item, k1 = std::min(K, k0 + columns_per_item);
      const int64_t R = (q1 - q0) * Lq, panels = (R + rows - 1) / rows;
      // Consecutive items of a query block (its runs of columns) pack its rows once: at Nq = 1 the
      // reranking call's 77 items repacked the same 32 rows, 6% of the int8 kernel's time.
      if (R > 0 && Ld > 0 && q0 != packed_q0) {
        policy.pack(q0, q1);
        packed_q0 = q0;
      }
      for (int64_t k = k0; k < k1; ++k) {
        best.assign(panels * rows, 0.0f);
        arg.assign(panels * rows, -1);
        const int64_t start = l.start(l.doc(q0, k));  // every query of the item reads doc(q0, k)
        for (int64_t j0 = 0; j0 < Ld && R > 0; j0 += block) {
          const int64_t n = std::min(block, Ld - j0);
          policy.fold(start + j0, n, v.d_mask != nullptr ? v.d_mask + start + j0 : nullptr,
                      static_cast<int32_t>(j0), best.data(), arg.data());
        }
        for (int64_t q = q0; q < q1; ++q) {
          float score = 0;
          for (int64_t i = 0; i < Lq; ++i) {
            const int64_t r = (q - q0) * Lq + i;
            const bool valid = v.query_token_valid(q, i);
            const RunningMax<float> m{best[r], valid ? arg[r] : -1};
            if (argmax != nullptr) argmax[(q * K + k) * Lq + i] = m.index;
            if (m.index >= 0) score += policy.contribution(q, i, m.value);
          }
          scores[q * K + k] = score;
        }
      }
    }
  });
}

}  // namespace kdops::cpu
