// The AVX-512 Margin-MSE rows (margin_mse_rows.h). Only called where the CPU has AVX-512
// (margin_mse_cpu.cpp asks cpu_isa()). No FMA contraction: the products round as the generic
// loops' do.
#include "cpu/margin_mse_rows.h"

#ifdef KDOPS_MARGIN_MSE_VECTOR_ROWS

#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq")
#pragma GCC optimize("fp-contract=off")
// GCC 12's intrinsics start some results from an operand initialised from itself
// (_mm256_undefined_pd), which -Wall reports at every inlined use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace kdops::cpu {
namespace {

constexpr int64_t kWidth = 16;

// The lanes of negatives [c, c + 16) that exist.
__mmask16 lanes(int64_t c, int64_t N) {
  return N - c >= kWidth ? __mmask16(0xFFFF) : __mmask16((1u << (N - c)) - 1);
}

// r_bj for the negatives [c, c + 16) of the row at s, t: (sp - sn) - (tp - tn), as
// MarginMSEView::residual; absent lanes hold garbage and are masked by the caller.
__m512 residuals(const float* s, const float* t, int64_t c, __mmask16 m) {
  const __m512 sp = _mm512_set1_ps(s[0]), tp = _mm512_set1_ps(t[0]);
  const __m512 sn = _mm512_maskz_loadu_ps(m, s + 1 + c), tn = _mm512_maskz_loadu_ps(m, t + 1 + c);
  return _mm512_sub_ps(_mm512_sub_ps(sp, sn), _mm512_sub_ps(tp, tn));
}

}  // namespace

void margin_mse_rows_forward_avx512(const float* student, const float* teacher, int64_t N,
                                    int64_t b0, int64_t b1, float* column_sum) {
  const int64_t L = N + 1;
  for (int64_t c = 0; c < N; c += kWidth) {
    const __mmask16 m = lanes(c, N);
    // Four accumulators, rows taken in turn: a single one would wait an add's latency per row.
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t b = b0;
    for (; b + 4 <= b1; b += 4) {
      for (int k = 0; k < 4; ++k) {
        const __m512 r = residuals(student + (b + k) * L, teacher + (b + k) * L, c, m);
        acc[k] = _mm512_mask_add_ps(acc[k], m, acc[k], _mm512_mul_ps(r, r));
      }
    }
    for (; b < b1; ++b) {
      const __m512 r = residuals(student + b * L, teacher + b * L, c, m);
      acc[0] = _mm512_mask_add_ps(acc[0], m, acc[0], _mm512_mul_ps(r, r));
    }
    const __m512 total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_storeu_ps(column_sum + c, _mm512_add_ps(_mm512_loadu_ps(column_sum + c), total));
  }
}

void margin_mse_rows_backward_avx512(const float* student, const float* teacher, int64_t N,
                                     int64_t b0, int64_t b1, float upstream, float* grad) {
  const int64_t L = N + 1;
  const __m512 up = _mm512_set1_ps(upstream), two = _mm512_set1_ps(2.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t b = b0; b < b1; ++b) {
    const float *s = student + b * L, *t = teacher + b * L;
    float* g = grad + b * L;
    __m512 pos = _mm512_setzero_ps();
    for (int64_t c = 0; c < N; c += kWidth) {
      const __mmask16 m = lanes(c, N);
      // margin_mse_term_grad: (2 r) * upstream; absent lanes 0.
      const __m512 d = _mm512_maskz_mul_ps(m, _mm512_mul_ps(two, residuals(s, t, c, m)), up);
      _mm512_mask_storeu_ps(g + 1 + c, m, _mm512_xor_ps(d, sign));
      pos = _mm512_add_ps(pos, d);
    }
    g[0] = _mm512_reduce_add_ps(pos);
  }
}

}  // namespace kdops::cpu
#endif
