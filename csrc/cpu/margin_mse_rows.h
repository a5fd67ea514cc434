// Hand-vectorised rows of the multi-negative Margin-MSE (float [B, 1+N] contiguous scores,
// reduced loss), for the CPUs that have AVX-512 or AVX2. The compiler cannot vectorise these short
// rows (N = 7 is a 7-trip loop per row; across rows the loads are strided) and runs them scalar.
// Math: common/margin_mse.h.
//
// AVX-512: one masked 16-wide vector per 16 negatives of a row; no score mask. AVX2: the row's
// 1 + N scores in 8-wide vectors, the positive in lane 0 of the first (masked out of the terms):
// N = 7, the common shape, is one whole vector a row, loaded and stored without masks; a score
// mask ([B, 1+N] bools) is read alongside. AVX-512 CPUs run the AVX2 rows for masked calls.
#pragma once

#include <cstdint>

// x86 only: elsewhere these functions do not exist, and margin_mse_cpu.cpp compiles no call to them.
#if defined(__x86_64__) || defined(__i386__)
#define KDOPS_MARGIN_MSE_VECTOR_ROWS 1

namespace kdops::cpu {

// Adds term (b, j) of the rows [b0, b1) into column_sum[j] (length N rounded up to 16, zeroed
// by the caller), summed in a fixed order of rows; a masked term adds 0.
void margin_mse_rows_forward_avx512(const float* student, const float* teacher, int64_t N,
                                    int64_t b0, int64_t b1, float* column_sum);
// The AVX2 rows take a score mask (nullptr: none) and return the number of counted terms.
int64_t margin_mse_rows_forward_avx2(const float* student, const float* teacher, const bool* mask,
                                     int64_t N, int64_t b0, int64_t b1, float* column_sum);

// grad [B, 1+N]: d loss / d s_bj = -margin_mse_term_grad(r_bj, upstream) in column 1 + j (0 for
// a masked term), their sum (d loss / d s_b0) in column 0, for the rows [b0, b1).
void margin_mse_rows_backward_avx512(const float* student, const float* teacher, int64_t N,
                                     int64_t b0, int64_t b1, float upstream, float* grad);
void margin_mse_rows_backward_avx2(const float* student, const float* teacher, const bool* mask,
                                   int64_t N, int64_t b0, int64_t b1, float upstream, float* grad);

}  // namespace kdops::cpu
#endif
