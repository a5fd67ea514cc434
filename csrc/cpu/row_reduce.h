// The maximum and the sum over a contiguous row, in 64-byte vectors of GCC's vector extensions
// (compiled to AVX-512, AVX2 or SSE2 registers in each clone of cpu_clones.h), ending in a fixed
// tree over the lanes. An `omp simd reduction` ends instead by combining its lanes one after
// the other through the stack: 16 dependent operations, which cost more than the rest of a
// 32-item row (ListMLE, listwise KD at n = 32). The sum's order is fixed by this code, so every
// CPU rounds it alike; a reduction's follows the vector width of the clone the loader picked.
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

template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t index __attribute__((vector_size(64)));
  static constexpr int kCount = 16;
};
template <>
struct Lanes<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t index __attribute__((vector_size(64)));
  static constexpr int kCount = 8;
};

// Lane l of the result is lane l ^ half of v: the partner at distance `half` in the tree.
template <typename T, int kHalf>
inline __attribute__((always_inline)) typename Lanes<T>::type partner(typename Lanes<T>::type v) {
  typename Lanes<T>::index idx;
  for (int l = 0; l < Lanes<T>::kCount; ++l) idx[l] = l ^ kHalf;
  return __builtin_shuffle(v, idx);
}

// combine over the lanes of v: lane l with l + W/2, then + W/4, ..., + 1.
template <typename T, typename Combine>
inline __attribute__((always_inline)) T lane_tree(typename Lanes<T>::type v, const Combine& combine) {
  if constexpr (Lanes<T>::kCount == 16) v = combine(v, partner<T, 8>(v));
  v = combine(v, partner<T, 4>(v));
  v = combine(v, partner<T, 2>(v));
  v = combine(v, partner<T, 1>(v));
  return v[0];
}

template <typename T>
inline __attribute__((always_inline)) typename Lanes<T>::type load_lanes(const T* p) {
  typename Lanes<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// max_i x_i * scale, -inf for len = 0; NaN items are skipped (std::max(running, item) semantics).
template <typename T>
inline __attribute__((always_inline)) T scaled_row_max(const T* x, int64_t len, T scale) {
  using V = typename Lanes<T>::type;
  constexpr int W = Lanes<T>::kCount;
  const auto vmax = [](V a, V b) { return b > a ? b : a; };
  V run = V{} - std::numeric_limits<T>::infinity();
  int64_t i = 0;
  for (; i + W <= len; i += W) run = vmax(run, load_lanes(x + i) * scale);
  T max = lane_tree<T>(run, vmax);
  for (; i < len; ++i) max = std::max(max, x[i] * scale);
  return max;
}

// sum_i x_i in double: whole vectors into double lanes, the tree, then the last items in order.
template <typename T>
inline __attribute__((always_inline)) double row_sum_double(const T* x, int64_t len) {
  using D = Lanes<double>::type;
  constexpr int W = Lanes<T>::kCount;
  const auto add = [](D a, D b) { return a + b; };
  D acc = D{};
  int64_t i = 0;
  for (; i + W <= len; i += W) {
    const auto v = load_lanes(x + i);
    if constexpr (W == 16) {
      acc += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), D) +
             __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), D);
    } else {
      acc += v;
    }
  }
  double total = lane_tree<double>(acc, add);
  for (; i < len; ++i) total += x[i];
  return total;
}

}  // namespace kdops::cpu
