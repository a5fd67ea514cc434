// Warp shuffles of any trivially copyable value (a float, a LogSumExp, an Affine map), word by
// word: __shfl_*_sync only move 32/64-bit scalars. Every lane of the warp must take part.
#pragma once

#include <cstring>
#include <type_traits>

#include "sim/portable.h"

namespace kdops::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullWarp = 0xffffffffu;

template <typename T>
struct ShuffleWords {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) % sizeof(unsigned) == 0,
                "shuffled values must be trivially copyable and a whole number of 32-bit words");
  static constexpr int kCount = sizeof(T) / sizeof(unsigned);
  unsigned w[kCount];
};

// v moved between lanes word by word: shuffle(word) is one __shfl_*_sync of a 32-bit word.
template <typename T, typename Shuffle>
__device__ __forceinline__ T shuffle_words(const T& v, Shuffle shuffle) {
  ShuffleWords<T> words;
  memcpy(words.w, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < ShuffleWords<T>::kCount; ++i) words.w[i] = shuffle(words.w[i]);
  T out;
  memcpy(&out, words.w, sizeof(T));
  return out;
}

// The value of lane (lane - delta), or the caller's own where that is below lane 0.
template <typename T>
__device__ __forceinline__ T shfl_up(const T& v, unsigned delta KDOPS_CALLER) {
  return shuffle_words(v, [delta KDOPS_FORWARD_CALLER](unsigned w) {
    return __shfl_up_sync(kFullWarp, w, delta, kWarpSize KDOPS_SITE);
  });
}

// The value of lane (lane + delta), or the caller's own where that is past lane 31.
template <typename T>
__device__ __forceinline__ T shfl_down(const T& v, unsigned delta KDOPS_CALLER) {
  return shuffle_words(v, [delta KDOPS_FORWARD_CALLER](unsigned w) {
    return __shfl_down_sync(kFullWarp, w, delta, kWarpSize KDOPS_SITE);
  });
}

// The value of lane src_lane (a broadcast when every lane names the same one).
template <typename T>
__device__ __forceinline__ T shfl_from(const T& v, int src_lane KDOPS_CALLER) {
  return shuffle_words(v, [src_lane KDOPS_FORWARD_CALLER](unsigned w) {
    return __shfl_sync(kFullWarp, w, src_lane, kWarpSize KDOPS_SITE);
  });
}

// The value of lane (lane ^ mask).
template <typename T>
__device__ __forceinline__ T shfl_xor(const T& v, int mask KDOPS_CALLER) {
  return shuffle_words(v, [mask KDOPS_FORWARD_CALLER](unsigned w) {
    return __shfl_xor_sync(kFullWarp, w, mask, kWarpSize KDOPS_SITE);
  });
}

}  // namespace kdops::cuda
