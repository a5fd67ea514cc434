// Launchers of the Margin-MSE kernels (margin_mse_kernels.cu), called by the ops in
// margin_mse_cuda.cpp. Pointers are device memory; scalar_t and acc_t as KDOPS_FOR_FLOATING_TYPES.
#pragma once

#include <cstdint>

#include "common/margin_mse.h"
#include "common/reduction.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::margin_mse {

// Blocks of the forward for `terms` = B*N terms: one grid-sum partial each.
int64_t forward_blocks(int64_t terms);

// Per-term losses into per_term (nullptr: not kept) and, through the grid sum over `blocks`
// partials (partial_sum, partial_count [blocks], done: a zero counter the kernel leaves zero,
// grid_scratch.h; all three nullptr when blocks is 1), the reduced loss and the valid-term count.
template <typename scalar_t, typename acc_t>
void forward(const MarginMSEView<scalar_t>& v, Reduction reduction, scalar_t* per_term,
             acc_t* partial_sum, long long* partial_count, unsigned int* done, scalar_t* loss,
             int64_t* count, int64_t blocks, LaunchTarget on);

// grad_pos[b * stride] and grad_neg[b * stride + j]; 'mean' divides by *count (device memory) or,
// with count nullptr, by fixed_count.
template <typename scalar_t, typename acc_t>
void backward(const MarginMSEView<scalar_t>& v, Reduction reduction, const scalar_t* grad,
              const int64_t* count, int64_t fixed_count, scalar_t* grad_pos, scalar_t* grad_neg,
              int64_t stride, LaunchTarget on);

}  // namespace kdops::cuda::margin_mse
