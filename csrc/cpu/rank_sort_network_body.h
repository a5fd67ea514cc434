// The bitonic merge stages of the sorting networks (rank_sort_network.h), written once for both
// ISAs: Batcher's bitonic sort in its form with ascending comparators only. Merging two sorted
// runs of w keys into 2w first compares key i with key 2w-1-i (the "flip"), which leaves two
// bitonic halves, then half-cleaners compare key i with key i + d for d = w/2 .. 1. Distances of a
// whole vector or more pair whole vectors (here); shorter ones pair lanes of one vector, in the
// ISA's own sort_vector and clean_vector. Each ISA's file includes this after its
// `#pragma GCC target(...)`, so that the body is compiled for that ISA.
//
// Isa provides: Vec (a vector of keys); reverse (its lanes in reverse order); min and max (lane by
// lane, as the ISA orders keys); sort_vector (sorts one vector) and clean_vector (sorts a bitonic
// vector).
#pragma once

namespace kdops::cpu {
namespace {

// Sorts kVecs vectors in registers: every loop bound is a constant, unrolled.
template <typename Isa, int kVecs>
inline void sort_vectors(typename Isa::Vec* v) {
  using Vec = typename Isa::Vec;
#pragma GCC unroll 32
  for (int i = 0; i < kVecs; ++i) v[i] = Isa::sort_vector(v[i]);
#pragma GCC unroll 32
  for (int run = 1; run < kVecs; run *= 2) {  // merge runs of `run` vectors pairwise
#pragma GCC unroll 32
    for (int base = 0; base < kVecs; base += 2 * run) {
#pragma GCC unroll 32
      for (int i = 0; i < run; ++i) {  // flip: vector base + i against the mirror of its partner
        const int j = base + 2 * run - 1 - i;
        const Vec a = v[base + i], b = Isa::reverse(v[j]);
        v[base + i] = Isa::min(a, b);
        v[j] = Isa::reverse(Isa::max(a, b));
      }
#pragma GCC unroll 32
      for (int d = run / 2; d >= 1; d /= 2) {  // half-cleaners between whole vectors
#pragma GCC unroll 32
        for (int r = base; r < base + 2 * run; ++r) {
          if ((r - base) & d) continue;
          const Vec a = v[r], b = v[r + d];
          v[r] = Isa::min(a, b);
          v[r + d] = Isa::max(a, b);
        }
      }
#pragma GCC unroll 32
      for (int r = base; r < base + 2 * run; ++r) v[r] = Isa::clean_vector(v[r]);
    }
  }
}

}  // namespace
}  // namespace kdops::cpu
