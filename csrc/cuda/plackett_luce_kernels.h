// Launchers of the Plackett-Luce family's kernels (plackett_luce_kernels.cu), called by the ops
// in plackett_luce_cuda.cpp. Pointers are device memory; scalar_t and acc_t as
// KDOPS_FOR_FLOATING_TYPES; lengths/first/values may be nullptr where the op has none.
#pragma once

#include <cstdint>

#include "common/plackett_luce.h"
#include "common/reduction.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::plackett_luce {

// The PL weights w_k of a row: 1, weights[b, k], or PLD's softmax(teacher[b] / T)[pi_k].
enum class WeightMode { Unit, Position, Teacher };

// ranking [B, n] = each row's valid items by descending key (ties to the lower index), first[b]
// (PLD's true class) forced to the front, padding columns after them in index order, sorted in
// the kernel. False, and nothing launched, for rows too long for its sorts.
template <typename scalar_t, typename acc_t>
bool rank_rows(const scalar_t* keys, const int64_t* lengths, const int64_t* first, int64_t B, int64_t n,
               int64_t* ranking, LaunchTarget on);

// ranking[b] = order[b] with first[b] moved to the front (rows rank_rows refuses, sorted on the host).
void move_to_front(const int64_t* order, const int64_t* first, int64_t B, int64_t n, int64_t* ranking,
                   LaunchTarget on);

// Per-row losses row_loss [B] of `ranking`; bitmap (zeroed [B, ceil(n/32)] words) and row_ok [B]
// check it is a permutation when given.
template <typename scalar_t, typename acc_t>
void forward(const PLRowsView<scalar_t>& v, const int64_t* ranking, WeightMode mode, const scalar_t* values,
             double temperature, unsigned int* bitmap, bool* row_ok, acc_t* row_loss, LaunchTarget on);

// grad_scores [B, n] and, when given, grad_weights (Position) or grad_teacher (Teacher) [B, n];
// lse_scratch [B, n].
template <typename scalar_t, typename acc_t>
void backward(const PLRowsView<scalar_t>& v, const int64_t* ranking, WeightMode mode, const scalar_t* values,
              double temperature, const scalar_t* grad, Reduction reduction, acc_t* lse_scratch,
              scalar_t* grad_scores, scalar_t* grad_weights, scalar_t* grad_teacher, LaunchTarget on);

// Listwise KD, per row: row_loss [B]; backward grad_student and (when given) grad_teacher [B, n].
template <typename scalar_t, typename acc_t>
void listwise_kd_forward(const PLRowsView<scalar_t>& v, const scalar_t* teacher, double ts, double tt,
                         acc_t* row_loss, LaunchTarget on);
template <typename scalar_t, typename acc_t>
void listwise_kd_backward(const PLRowsView<scalar_t>& v, const scalar_t* teacher, double ts, double tt,
                          const scalar_t* grad, Reduction reduction, scalar_t* grad_student,
                          scalar_t* grad_teacher, LaunchTarget on);

}  // namespace kdops::cuda::plackett_luce
