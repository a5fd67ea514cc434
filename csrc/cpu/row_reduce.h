// The maximum and the sum over a contiguous row, in the lanes of a 64-byte vector of GCC's
// vector extensions (compiled to AVX-512, AVX2 or SSE2 registers in each clone of
// cpu_clones.h), ending in a fixed tree over the lanes. An `omp simd reduction` ends instead by
// combining its lanes one after the other through the stack: 16 dependent operations, which cost
// more than the rest of a 32-item row (ListMLE, listwise KD at n = 32). The sum's order is fixed
// by this code, so every CPU rounds it alike; a reduction's follows the vector width of the
// clone the loader picked.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

// Every function here is inlined, so no 64-byte vector crosses a call: GCC's note that passing
// one changes the ABI where AVX-512 is off (the AVX2 and baseline clones) does not apply. Off for
// the whole including file, as GCC reports it where the templates are instantiated, at its end.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace kdops::cpu {

// T's vector of kBytes (one lane when kBytes = sizeof(T)).
template <typename T, int kBytes>
struct VecOf {
  typedef T type __attribute__((vector_size(kBytes)));
};

// combine over the lanes of v: lane l with l + W/2, then + W/4, ..., + 1, as the lower half with
// the upper one, halving the vector each step.
template <typename T, int kBytes, typename Combine>
inline __attribute__((always_inline)) T lane_tree(typename VecOf<T, kBytes>::type v, const Combine& combine) {
  if constexpr (kBytes == sizeof(T)) {
    return v[0];
  } else {
    typename VecOf<T, kBytes / 2>::type lo, hi;
    std::memcpy(&lo, &v, kBytes / 2);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + kBytes / 2, kBytes / 2);
    return lane_tree<T, kBytes / 2>(combine(lo, hi), combine);
  }
}

template <typename V, typename T>
inline __attribute__((always_inline)) V load_lanes(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The order of both reductions is that of one 64-byte vector of W lanes (lane l takes items
// l, l + W, ...; then the tree), held as its two 32-byte halves: whole registers on AVX2 and
// AVX-512 alike. As one 64-byte generic vector, GCC moved it through the stack in the AVX2 clone
// and scalarised the max's select there.

// max_i x_i, -inf for len = 0; NaN items are skipped (std::max(running, item) semantics).
template <typename T>
inline __attribute__((always_inline)) T row_max(const T* x, int64_t len) {
  using H = typename VecOf<T, 32>::type;
  constexpr int W = 64 / sizeof(T), kHalf = W / 2;
  const auto vmax = [](auto a, auto b) { return b > a ? b : a; };
  H lo = H{} - std::numeric_limits<T>::infinity(), hi = lo;
  int64_t i = 0;
  for (; i + W <= len; i += W) {
    lo = vmax(lo, load_lanes<H>(x + i));
    hi = vmax(hi, load_lanes<H>(x + i + kHalf));
  }
  T max = lane_tree<T, 32>(vmax(lo, hi), vmax);
  for (; i < len; ++i) max = std::max(max, x[i]);
  return max;
}

// sum_i x_i in double: lane l of 8 double lanes takes the items l (and l + 8 for float) of each
// W items, then the tree, then the last items in order.
template <typename T>
inline __attribute__((always_inline)) double row_sum_double(const T* x, int64_t len) {
  using D = VecOf<double, 32>::type;
  constexpr int W = 64 / sizeof(T);
  const auto add = [](auto a, auto b) { return a + b; };
  D lo = D{}, hi = D{};
  int64_t i = 0;
  for (; i + W <= len; i += W) {
    if constexpr (W == 16) {
      using F = VecOf<float, 16>::type;
      const auto wide = [&](int64_t at) { return __builtin_convertvector(load_lanes<F>(x + at), D); };
      lo += wide(i) + wide(i + 8);
      hi += wide(i + 4) + wide(i + 12);
    } else {
      lo += load_lanes<D>(x + i);
      hi += load_lanes<D>(x + i + 4);
    }
  }
  double total = lane_tree<double, 32>(lo + hi, add);
  for (; i < len; ++i) total += x[i];
  return total;
}

}  // namespace kdops::cpu
