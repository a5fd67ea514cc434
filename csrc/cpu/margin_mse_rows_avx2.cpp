// The AVX2 Margin-MSE rows (margin_mse_rows.h): a row's scores in 8-wide vectors, row position
// c + l in lane l of the vector at c. The positive (position 0) sits in lane 0 of the first
// vector, where it is the broadcast's own copy and is masked out of the terms; so at N = 7 a row
// is one whole vector, loaded and stored without masks. A score mask ([B, 1+N] bools, the
// scores' layout) is read the same way, 8 flags a vector. Only called where the CPU has AVX2
// (margin_mse_cpu.cpp asks cpu_isa()). No FMA contraction: the products round as the generic
// loops' do.
#include "cpu/margin_mse_rows.h"

#ifdef KDOPS_MARGIN_MSE_VECTOR_ROWS

#pragma GCC target("avx2,popcnt")
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace kdops::cpu {
namespace {

constexpr int64_t kWidth = 8;

// The row positions [c, c + 8) of a row of L scores.
struct Lanes {
  __m256i present;  // lanes with p < L: the load and store mask
  __m256 term;      // lanes with 1 <= p < L (the negatives), all bits set: ANDed into values
  int count;        // present lanes; all 8: plain loads and stores
};

Lanes lanes(int64_t c, int64_t L) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int count = static_cast<int>(std::min(L - c, kWidth));
  const __m256i present = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), iota);
  const __m256i negative = _mm256_cmpgt_epi32(iota, _mm256_set1_epi32(c == 0 ? 0 : -1));
  return {present, _mm256_castsi256_ps(_mm256_and_si256(present, negative)), count};
}

__m256 load(const float* p, const Lanes& m) {
  return m.count == kWidth ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m.present);
}

void store(float* p, const Lanes& m, __m256 v) {
  if (m.count == kWidth) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, m.present, v);
  }
}

// The lanes at c of a row that hold counted terms, all bits set: m.term, less (kMasked, `mask`
// the row's flags) the lanes whose negative or the row's positive is masked (MarginMSEView::valid).
template <bool kMasked>
__m256 terms(const bool* mask, int64_t c, const Lanes& m) {
  if constexpr (!kMasked) return m.term;
  int64_t flags = 0;  // the present lanes' flags, one byte each (0 or 1)
  if (m.count == kWidth) {
    std::memcpy(&flags, mask + c, sizeof(flags));  // one load; a run-time size would call memcpy
  } else {
    std::memcpy(&flags, mask + c, static_cast<size_t>(m.count));
  }
  const __m256i negative = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(flags)),
                                              _mm256_setzero_si256());
  const __m256i positive = _mm256_set1_epi32(mask[0] ? -1 : 0);
  return _mm256_and_ps(m.term, _mm256_castsi256_ps(_mm256_and_si256(negative, positive)));
}

// r for the positions [c, c + 8) of the row at s, t: (sp - sn) - (tp - tn), as
// MarginMSEView::residual; lanes that are not terms hold garbage and are masked by the caller.
__m256 residuals(const float* s, const float* t, int64_t c, const Lanes& m) {
  const __m256 sp = _mm256_broadcast_ss(s), tp = _mm256_broadcast_ss(t);
  const __m256 sn = load(s + c, m), tn = load(t + c, m);
  return _mm256_sub_ps(_mm256_sub_ps(sp, sn), _mm256_sub_ps(tp, tn));
}

float lane_sum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

// The masked and unmasked rows are separate loops (kMasked): a per-row test of the mask pointer
// cost the unmasked rows a third of their time.
template <bool kMasked>
int64_t forward_rows(const float* student, const float* teacher, const bool* mask, int64_t N,
                     int64_t b0, int64_t b1, float* column_sum) {
  const int64_t L = N + 1;
  int64_t count = 0;
  for (int64_t c = 0; c < L; c += kWidth) {
    const Lanes m = lanes(c, L);
    // Four accumulators, rows taken in turn: a single one would wait an add's latency per row.
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const auto add = [&](int64_t b, int k) {
      const __m256 r = residuals(student + b * L, teacher + b * L, c, m);
      const __m256 counted = terms<kMasked>(kMasked ? mask + b * L : nullptr, c, m);
      acc[k] = _mm256_add_ps(acc[k], _mm256_and_ps(_mm256_mul_ps(r, r), counted));
      if constexpr (kMasked) count += _mm_popcnt_u32(static_cast<unsigned>(_mm256_movemask_ps(counted)));
    };
    int64_t b = b0;
    for (; b + 4 <= b1; b += 4) {
      for (int k = 0; k < 4; ++k) add(b + k, k);
    }
    for (; b < b1; ++b) add(b, 0);
    alignas(32) float total[kWidth];
    _mm256_store_ps(total, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (int64_t p = std::max<int64_t>(c, 1); p < c + m.count; ++p) {
      column_sum[p - 1] += total[p - c];  // position p is negative p - 1
    }
  }
  return kMasked ? count : (b1 - b0) * N;
}

template <bool kMasked>
void backward_rows(const float* student, const float* teacher, const bool* mask, int64_t N,
                   int64_t b0, int64_t b1, float upstream, float* grad) {
  const int64_t L = N + 1;
  const __m256 up = _mm256_set1_ps(upstream), two = _mm256_set1_ps(2.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const Lanes first = lanes(0, L);  // hoisted: at N <= 7 the only vector of every row
  for (int64_t b = b0; b < b1; ++b) {
    const float *s = student + b * L, *t = teacher + b * L;
    float* g = grad + b * L;
    __m256 pos = _mm256_setzero_ps();
    for (int64_t c = 0; c < L; c += kWidth) {
      const Lanes m = c == 0 ? first : lanes(c, L);
      // margin_mse_term_grad: (2 r) * upstream; lanes that are not counted terms 0.
      const __m256 d = _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(two, residuals(s, t, c, m)), up),
                                     terms<kMasked>(kMasked ? mask + b * L : nullptr, c, m));
      store(g + c, m, _mm256_xor_ps(d, sign));  // position 0 is written below
      pos = _mm256_add_ps(pos, d);
    }
    g[0] = lane_sum(pos);
  }
}

}  // namespace

int64_t margin_mse_rows_forward_avx2(const float* student, const float* teacher, const bool* mask,
                                     int64_t N, int64_t b0, int64_t b1, float* column_sum) {
  return mask == nullptr ? forward_rows<false>(student, teacher, mask, N, b0, b1, column_sum)
                         : forward_rows<true>(student, teacher, mask, N, b0, b1, column_sum);
}

void margin_mse_rows_backward_avx2(const float* student, const float* teacher, const bool* mask,
                                   int64_t N, int64_t b0, int64_t b1, float upstream, float* grad) {
  if (mask == nullptr) return backward_rows<false>(student, teacher, mask, N, b0, b1, upstream, grad);
  backward_rows<true>(student, teacher, mask, N, b0, b1, upstream, grad);
}

}  // namespace kdops::cpu
#endif
