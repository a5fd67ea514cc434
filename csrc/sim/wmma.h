// nvcuda::wmma for the simulator (part of cuda_sim.h). Every lane holds the whole tile, in
// logical row-major order, so `frag.x[i]` and `num_elements` differ from the hardware's (a few
// elements per lane in an undocumented order). Code that treats the fragment element-wise and
// uniformly across lanes works on both; code that edits elements depending on the lane (i.e.
// on the hardware layout) makes the 32 copies differ, and every warp-wide operation checks
// that they agree, so such code fails here instead of giving wrong results on some GPUs.
// mma_sync multiplies exactly (16-bit products are exact in float) and accumulates in float,
// k ascending; tensor cores sum in another order, so compare with float tolerances.
// store_matrix_sync writes each lane's share of the tile as that lane resumes: reading another
// lane's elements needs a barrier, as on the GPU.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "half.h"
#include "access_record.h"
#include "runtime_api.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
namespace precision {
struct tf32 {};  // fragments of it hold floats; mma_sync uses their top 19 bits, as tensor cores do
}  // namespace precision
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<precision::tf32> {
  using type = float;
};
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
 public:
  static constexpr int rows = detail::Shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  static constexpr bool is_tf32 = std::is_same_v<T, precision::tf32>;
  using element_type = typename detail::Storage<T>::type;
  element_type x[num_elements];  // x[r * cols + c]
};

namespace detail {

using kdops::sim::detail::Site;

template <typename Frag>
void check_lanes_agree(const char* what, void* const* lane_frags) {
  for (int lane = 1; lane < 32; ++lane) {
    if (std::memcmp(lane_frags[0], lane_frags[lane], sizeof(Frag)) != 0) {
      const std::string message = std::string(what) + ": lane " + std::to_string(lane) +
                                  "'s fragment differs from lane 0's. The simulator holds the whole tile in every "
                                  "lane, so the lanes' copies differ only if code edited elements depending on the "
                                  "lane, which depends on the hardware's fragment layout";
      kdops::sim::detail::fail(message.c_str());
    }
  }
}

template <typename P>
void check_same_argument(const char* what, const char* name, P (*get)(void*), void* const* lane_data) {
  for (int lane = 1; lane < 32; ++lane) {
    if (get(lane_data[lane]) != get(lane_data[0])) {
      const std::string message = std::string(what) + ": lane " + std::to_string(lane) + " passed another " + name +
                                  " than lane 0 (it must be the same in every lane)";
      kdops::sim::detail::fail(message.c_str());
    }
  }
}

template <typename Frag, typename Src>
struct LoadCall {
  Frag* frag;
  const Src* ptr;
  unsigned ldm;
  bool col_major;
  static void complete(void* const* lane_data) {
    constexpr const char* kWhat = "wmma::load_matrix_sync";
    check_same_argument<const void*>(kWhat, "pointer", [](void* d) -> const void* { return static_cast<LoadCall*>(d)->ptr; }, lane_data);
    check_same_argument<unsigned>(kWhat, "ldm", [](void* d) { return static_cast<LoadCall*>(d)->ldm; }, lane_data);
    check_same_argument<bool>(kWhat, "layout", [](void* d) { return static_cast<LoadCall*>(d)->col_major; }, lane_data);
    const LoadCall& first = *static_cast<LoadCall*>(lane_data[0]);
    Frag loaded;
    for (int r = 0; r < Frag::rows; ++r) {
      for (int c = 0; c < Frag::cols; ++c) {
        const size_t offset = first.col_major ? static_cast<size_t>(c) * first.ldm + r : static_cast<size_t>(r) * first.ldm + c;
        loaded.x[r * Frag::cols + c] = static_cast<typename Frag::element_type>(first.ptr[offset]);
      }
    }
    for (int lane = 0; lane < 32; ++lane) *static_cast<LoadCall*>(lane_data[lane])->frag = loaded;
  }
};

template <typename Frag, typename Dst>
struct StoreCall {
  const Frag* frag;
  Dst* ptr;
  unsigned ldm;
  bool col_major;
  static void complete(void* const* lane_data) {
    constexpr const char* kWhat = "wmma::store_matrix_sync";
    check_same_argument<const void*>(kWhat, "pointer", [](void* d) -> const void* { return static_cast<StoreCall*>(d)->ptr; }, lane_data);
    check_same_argument<unsigned>(kWhat, "ldm", [](void* d) { return static_cast<StoreCall*>(d)->ldm; }, lane_data);
    check_same_argument<bool>(kWhat, "layout", [](void* d) { return static_cast<StoreCall*>(d)->col_major; }, lane_data);
    void* frags[32];
    for (int lane = 0; lane < 32; ++lane) frags[lane] = const_cast<Frag*>(static_cast<StoreCall*>(lane_data[lane])->frag);
    check_lanes_agree<Frag>(kWhat, frags);
  }
  // Each lane stores its own share of the tile (elements lane, lane + 32, ...) when it resumes
  // from the warp-wide call, as each lane of a GPU stores its fragment's elements: wmma.store's
  // .sync waits for the warp at the start, it does not make one lane's stores visible to
  // another. A lane that reads elements of the tile before a __syncwarp or __syncthreads may
  // read what was there before (the hardware's shares differ, but the need for the barrier
  // is the same).
  void store_own_share(unsigned lane) const {
    for (int e = static_cast<int>(lane); e < Frag::rows * Frag::cols; e += 32) {
      const int r = e / Frag::cols, c = e % Frag::cols;
      const size_t offset = col_major ? static_cast<size_t>(c) * ldm + r : static_cast<size_t>(r) * ldm + c;
      ptr[offset] = static_cast<Dst>(frag->x[e]);
    }
  }
};

// An operand as the tensor core reads it: tf32 keeps the sign, exponent and top 10 mantissa bits.
template <typename Frag>
float operand(typename Frag::element_type v) {
  float f = static_cast<float>(v);
  if constexpr (Frag::is_tf32) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits &= 0xffffe000u;
    std::memcpy(&f, &bits, 4);
  }
  return f;
}

template <typename FragD, typename FragA, typename FragB, typename FragC>
struct MmaCall {
  FragD* d;
  const FragA* a;
  const FragB* b;
  const FragC* c;
  static void complete(void* const* lane_data) {
    constexpr const char* kWhat = "wmma::mma_sync";
    void* frags[32];
    for (int lane = 0; lane < 32; ++lane) frags[lane] = const_cast<FragA*>(static_cast<MmaCall*>(lane_data[lane])->a);
    check_lanes_agree<FragA>(kWhat, frags);
    for (int lane = 0; lane < 32; ++lane) frags[lane] = const_cast<FragB*>(static_cast<MmaCall*>(lane_data[lane])->b);
    check_lanes_agree<FragB>(kWhat, frags);
    for (int lane = 0; lane < 32; ++lane) frags[lane] = const_cast<FragC*>(static_cast<MmaCall*>(lane_data[lane])->c);
    check_lanes_agree<FragC>(kWhat, frags);
    const MmaCall& first = *static_cast<MmaCall*>(lane_data[0]);
    constexpr int M = FragA::rows, K = FragA::cols, N = FragB::cols;
    // Integer fragments (s8/u8 -> s32) accumulate exactly in int32, floating ones in float.
    using Acc = std::conditional_t<std::is_integral_v<typename FragD::element_type>, int32_t, float>;
    FragD result;
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j < N; ++j) {
        Acc acc = static_cast<Acc>(first.c->x[i * N + j]);
        for (int k = 0; k < K; ++k) {
          acc += static_cast<Acc>(operand<FragA>(first.a->x[i * K + k])) * static_cast<Acc>(operand<FragB>(first.b->x[k * N + j]));
        }
        result.x[i * N + j] = static_cast<typename FragD::element_type>(acc);
      }
    }
    // d may alias c in some lanes' calls: write after every read.
    for (int lane = 0; lane < 32; ++lane) *static_cast<MmaCall*>(lane_data[lane])->d = result;
  }
};

template <typename Layout>
constexpr bool is_col_major() {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "matrix_a / matrix_b fragments need a row_major or col_major layout to be loaded");
  return std::is_same_v<Layout, col_major>;
}

}  // namespace detail

// cvt.rna.tf32.f32: round to the nearest tf32 value, ties away from zero (kept in a float).
inline float __float_to_tf32(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;  // inf and NaN stay
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& frag, const V& value) {
  using Element = typename fragment<Use, M, N, K, T, Layout>::element_type;
  for (int i = 0; i < frag.num_elements; ++i) frag.x[i] = static_cast<Element>(value);
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename Src>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& frag, const Src* ptr, unsigned ldm,
                      const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using Call = detail::LoadCall<fragment<Use, M, N, K, T, Layout>, Src>;
  Call call{&frag, ptr, ldm, detail::is_col_major<Layout>()};
  kdops::sim::detail::warp_call("wmma::load_matrix_sync", &call, &Call::complete, detail::Site{file, line});
}

template <int M, int N, int K, typename T, typename Src>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& frag, const Src* ptr, unsigned ldm, layout_t layout,
                      const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using Call = detail::LoadCall<fragment<accumulator, M, N, K, T>, Src>;
  Call call{&frag, ptr, ldm, layout == mem_col_major};
  kdops::sim::detail::warp_call("wmma::load_matrix_sync", &call, &Call::complete, detail::Site{file, line});
}

template <int M, int N, int K, typename T, typename Dst>
void store_matrix_sync(Dst* ptr, const fragment<accumulator, M, N, K, T>& frag, unsigned ldm, layout_t layout,
                       const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using Call = detail::StoreCall<fragment<accumulator, M, N, K, T>, Dst>;
  Call call{&frag, ptr, ldm, layout == mem_col_major};
  kdops::sim::detail::warp_call("wmma::store_matrix_sync", &call, &Call::complete, detail::Site{file, line});
#if defined(KDOPS_SIM_RECORD)
  kdops::sim::record::suppress(true);  // the simulator's split of the tile, not the hardware's (undocumented) one
#endif
  call.store_own_share(kdops::sim::detail::current().lane);
#if defined(KDOPS_SIM_RECORD)
  kdops::sim::record::suppress(false);
#endif
}

template <int M, int N, int K, typename TD, typename TA, typename LA, typename TB, typename LB, typename TC>
void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c,
              bool satf = false, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  (void)satf;
  using Call = detail::MmaCall<fragment<accumulator, M, N, K, TD>, fragment<matrix_a, M, N, K, TA, LA>,
                               fragment<matrix_b, M, N, K, TB, LB>, fragment<accumulator, M, N, K, TC>>;
  Call call{&d, &a, &b, &c};
  kdops::sim::detail::warp_call("wmma::mma_sync", &call, &Call::complete, detail::Site{file, line});
}

}  // namespace nvcuda::wmma
