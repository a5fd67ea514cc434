// Launchers of the MaxSim kernels (maxsim_kernels.cu), called by the ops in maxsim_cuda.cpp.
// Pointers are device memory.
#pragma once

#include <cstdint>

#include "common/maxsim.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::maxsim {

// Forward on tensor cores (fp32 scores [Nq, K]): scalar_t fp16/bf16, or float as TF32, for a d
// whose tiles fit in shared memory (tensor_core_fits: check first). partial: scratch of
// tensor_core_partials(v, on.sms) floats, nullptr when that is 0.
template <typename scalar_t, bool kWriteArgmax>
void tensor_core_forward(const MaxSimView<scalar_t>& v, float* scores, int32_t* argmax, float* partial,
                         LaunchTarget on);

// The floats of scratch tensor_core_forward needs on a device of `sms` SMs: the per-chunk sums of
// long queries split over several blocks (maxsim_groups.cuh: split_chunks), else 0.
template <typename scalar_t, bool kWriteArgmax>
int64_t tensor_core_partials(const MaxSimView<scalar_t>& v, int64_t sms);

// Whether tensor_core_forward's tiles of d features fit in shared memory.
template <typename scalar_t, bool kWriteArgmax>
bool tensor_core_fits(int64_t dim);

// The forward on CUDA cores, any d (tiles of as many features as shared memory holds): scores
// [Nq, K] in acc_t. Exact for float and double; fp16/bf16 (acc_t float) where d is too wide
// for the tensor-core tiles.
template <typename scalar_t, typename acc_t, bool kWriteArgmax>
void simt_forward(const MaxSimView<scalar_t>& v, acc_t* scores, int32_t* argmax, LaunchTarget on);

// dQ [Nq, Lq, d] and dD [T, d] (T = total_tokens) from the saved argmax and the per-score
// weights w [Nq, K] (acc_t).
template <typename scalar_t, typename acc_t>
void query_gradient(const MaxSimView<scalar_t>& v, const acc_t* w, const int32_t* argmax, scalar_t* dQ,
                LaunchTarget on);

// Parts the entries of a hot row group of dD are split into: 1 when the shapes let no row group
// pass the hot threshold (then doc_gradient needs no scratch).
int64_t doc_grad_slices(const MaxSimLayout& l, int64_t Nq, int64_t Lq);
// Slot rows of the hot groups' partials: num_docs x (the hot groups a doc can have) x 8 rows.
int64_t doc_grad_slot_rows(const MaxSimLayout& l, int64_t Nq, int64_t Lq);

// doc_gradient's device scratch when slices > 1: counts int32 [T] zero-filled, rows_of int64
// [slot_rows] filled with -1, partial acc_t [slices, slot_rows, d] (uninitialised); all nullptr
// when slices == 1.
template <typename acc_t>
struct DocGradScratch {
  int64_t slices;
  int32_t* counts;
  int64_t* rows_of;
  acc_t* partial;
};

template <typename scalar_t, typename acc_t>
void doc_gradient(const MaxSimView<scalar_t>& v, int64_t total_tokens, const acc_t* w, const int32_t* argmax,
                  DocGradScratch<acc_t> scratch, scalar_t* dD, LaunchTarget on);

}  // namespace kdops::cuda::maxsim
