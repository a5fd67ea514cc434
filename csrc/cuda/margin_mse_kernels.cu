// Margin-MSE CUDA kernels: one launch forward (per-term losses and/or a deterministic grid sum
// of loss and valid-term count), one launch backward (a thread per row). Math:
// common/margin_mse.h, shared with the CPU kernels. The ops around them: margin_mse_cuda.cpp.
//
// The forward's grid is set by the work alone (kTermsPerBlock terms a block), never by the
// device's SM count: the grid sum adds the same partials in the same order on every GPU model,
// so the loss is bit-identical across devices (tests/test_simulated_kernels.py, two presets).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <limits>

#include "cuda/block_reduce.cuh"
#include "cuda/grid_sum.cuh"
#include "cuda/launch.cuh"
#include "cuda/margin_mse_kernels.h"

namespace kdops::cuda::margin_mse {
namespace {

constexpr int kThreads = 256;
constexpr int kTermsPerThread = 8;  // enough work a block to hide the grid sum's last-block pass
constexpr int64_t kTermsPerBlock = int64_t(kThreads) * kTermsPerThread;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    margin_mse_forward_kernel(MarginMSEView<scalar_t> v, Reduction reduction, scalar_t* per_term,
                              acc_t* partial_sum, long long* partial_count, unsigned int* done,
                              scalar_t* loss, int64_t* count) {
  const int64_t terms = v.B * v.N;
  acc_t sum = 0;
  long long valid_terms = 0;
  // The block's chunk of kTermsPerBlock terms, a coalesced row of kThreads at a time.
  const int64_t first = blockIdx.x * kTermsPerBlock + threadIdx.x;
  for (int i = 0; i < kTermsPerThread; ++i) {
    const int64_t t = first + int64_t(i) * kThreads;
    if (t >= terms) break;
    const int64_t b = t / v.N, j = t - b * v.N;
    const bool valid = v.valid(b, j);
    const acc_t r = v.template residual<acc_t>(b, j);
    const acc_t term = valid ? r * r : acc_t(0);
    if (per_term != nullptr) per_term[t] = static_cast<scalar_t>(term);
    sum += term;
    valid_terms += valid;
  }
  sum = block_sum<kThreads>(sum);
  valid_terms = block_sum<kThreads>(valid_terms);
  if (grid_sum<kThreads>(sum, valid_terms, partial_sum, partial_count, done) && threadIdx.x == 0) {
    *count = valid_terms;
    if (reduction == Reduction::Mean) sum /= static_cast<acc_t>(valid_terms > 0 ? valid_terms : 1);
    if (reduction != Reduction::None) *loss = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    margin_mse_backward_kernel(MarginMSEView<scalar_t> v, Reduction reduction,
                               const scalar_t* grad, const int64_t* count, int64_t fixed_count,
                               scalar_t* grad_pos,
                               scalar_t* grad_neg, int64_t stride) {
  acc_t shared = static_cast<acc_t>(grad[0]);
  // 'mean' divides by the valid-term count: the forward's (on the device) or a known one.
  const int64_t terms = count != nullptr ? *count : fixed_count;
  if (reduction == Reduction::Mean) shared /= static_cast<acc_t>(terms > 0 ? terms : 1);
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < v.B;
       b += int64_t(gridDim.x) * kThreads) {
    acc_t pos = 0;
    for (int64_t j = 0; j < v.N; ++j) {
      const acc_t upstream =
          reduction == Reduction::None ? static_cast<acc_t>(grad[b * v.N + j]) : shared;
      const acc_t d = v.valid(b, j)
                          ? margin_mse_term_grad(v.template residual<acc_t>(b, j), upstream)
                          : acc_t(0);
      grad_neg[b * stride + j] = static_cast<scalar_t>(-d);
      pos += d;
    }
    grad_pos[b * stride] = static_cast<scalar_t>(pos);
  }
}

}  // namespace

int64_t forward_blocks(int64_t terms) {
  return std::max<int64_t>(1, (terms + kTermsPerBlock - 1) / kTermsPerBlock);
}

template <typename scalar_t, typename acc_t>
void forward(const MarginMSEView<scalar_t>& v, Reduction reduction, scalar_t* per_term,
             acc_t* partial_sum, long long* partial_count, unsigned int* done, scalar_t* loss,
             int64_t* count, int64_t blocks, LaunchTarget on) {
  TORCH_CHECK_VALUE(blocks <= std::numeric_limits<int>::max(), "student holds too many terms (B*N = ",
                    v.B * v.N, ") for one launch");
  launch(margin_mse_forward_kernel<scalar_t, acc_t>, static_cast<int>(blocks), kThreads, 0, on.stream, v,
         reduction, per_term, partial_sum, partial_count, done, loss, count);
}

template <typename scalar_t, typename acc_t>
void backward(const MarginMSEView<scalar_t>& v, Reduction reduction, const scalar_t* grad,
              const int64_t* count, int64_t fixed_count, scalar_t* grad_pos, scalar_t* grad_neg,
              int64_t stride, LaunchTarget on) {
  launch(margin_mse_backward_kernel<scalar_t, acc_t>, grid_size(v.B, kThreads, on.sms), kThreads, 0,
         on.stream, v, reduction, grad, count, fixed_count, grad_pos, grad_neg, stride);
}

#define KDOPS_INSTANTIATE(scalar_t, acc_t)                                                            \
  template void forward<scalar_t, acc_t>(const MarginMSEView<scalar_t>&, Reduction, scalar_t*, acc_t*, \
                                         long long*, unsigned int*, scalar_t*, int64_t*, int64_t,     \
                                         LaunchTarget);                                               \
  template void backward<scalar_t, acc_t>(const MarginMSEView<scalar_t>&, Reduction, const scalar_t*, \
                                          const int64_t*, int64_t, scalar_t*, scalar_t*, int64_t,     \
                                          LaunchTarget);
KDOPS_FOR_FLOATING_TYPES(KDOPS_INSTANTIATE)
#undef KDOPS_INSTANTIATE

}  // namespace kdops::cuda::margin_mse
