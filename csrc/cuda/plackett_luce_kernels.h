// Launchers of the Plackett-Luce family's kernels, called by the ops in plackett_luce_cuda.cpp.
// Rows of at most kMaxWarpRowItems items are computed by one warp each
// (plackett_luce_warp_kernels.cu: ranking, loss and gradients in one launch), longer rows by one
// block each (plackett_luce_kernels.cu: a ranking kernel, then a loss or a gradient kernel);
// listwise KD takes a warp or a block per row by the same rule (listwise_kd_kernels.cu).
// Pointers are device memory; scalar_t and acc_t as KDOPS_FOR_FLOATING_TYPES; the optional ones
// (lengths, first, values, outputs) may be nullptr.
#pragma once

#include <cstdint>

#include "common/plackett_luce.h"
#include "common/reduction.h"
#include "cuda/launch_target.h"

namespace kdops::cuda::plackett_luce {

// A warp per row up to this length: 8 keys a lane in registers for the sort and the scans. A
// block per row beyond (a row of 64 items left 3 of a block's 4 warps idle).
constexpr int64_t kMaxWarpRowItems = 256;

// The PL weights w_k of a row: 1, weights[b, k], or PLD's softmax(teacher[b] / T)[pi_k].
enum class WeightMode { Unit, Position, Teacher };

// What one call of the PL kernels computes for every row. The ranking [B, n] is either given
// (keys == nullptr: a user's ranking, or a forward's in a backward) or computed from keys: each
// row's valid items by descending key (ties to the lower index), first[b] (PLD's true class)
// forced to the front, padding columns after them in index order.
template <typename scalar_t, typename acc_t>
struct PLRowsCall {
  PLRowsView<scalar_t> v;
  WeightMode mode = WeightMode::Unit;
  const scalar_t* values = nullptr;  // weights or teacher [B, n]
  double temperature = 1;            // PLD's
  const scalar_t* keys = nullptr;    // rank by these ([B, n]), or nullptr: the ranking is given
  const int64_t* first = nullptr;    // [B], with keys
  int64_t* ranking = nullptr;        // [B, n]: read, or written when ranked here
  bool* row_ok = nullptr;            // [B]: whether the given ranking is a permutation (checked when given)
  bool* args_ok = nullptr;           // [B]: whether lengths[b] is in [0, n] and first[b] in [0, n) (when given)
  acc_t* row_loss = nullptr;         // [B] per-row losses, or nullptr
  const scalar_t* grad = nullptr;    // the loss's upstream gradient (scalar or [B]); nullptr: 1
  Reduction reduction = Reduction::Mean;
  scalar_t* grad_scores = nullptr;   // [B, n], or nullptr: no gradients
  scalar_t* grad_weights = nullptr;  // [B, n] (mode Position), or nullptr
  scalar_t* grad_teacher = nullptr;  // [B, n] (mode Teacher), or nullptr
};

// Rows of at most kMaxWarpRowItems: everything c asks for in one launch (a warp per row).
template <typename scalar_t, typename acc_t>
void warp_rows(const PLRowsCall<scalar_t, acc_t>& c, LaunchTarget on);

// --- a block per row (any length) ---------------------------------------------------------------

// c.ranking from c.keys / c.first in a block's shared memory; false, and nothing launched, for
// rows too long for it (the op sorts those with at::sort, then move_to_front).
template <typename scalar_t, typename acc_t>
bool rank_rows(const PLRowsCall<scalar_t, acc_t>& c, LaunchTarget on);

// ranking[b] = order[b] with first[b] moved to the front.
void move_to_front(const int64_t* order, const int64_t* first, int64_t B, int64_t n, int64_t* ranking,
                   LaunchTarget on);

// c.row_loss of the ranking in c.ranking; bitmap (zeroed [B, ceil(n/32)] words) for the
// permutation check when c.row_ok is given.
template <typename scalar_t, typename acc_t>
void forward(const PLRowsCall<scalar_t, acc_t>& c, unsigned int* bitmap, LaunchTarget on);

// The gradients (and c.row_loss when given) of the ranking in c.ranking; lse_scratch [B, n].
template <typename scalar_t, typename acc_t>
void backward(const PLRowsCall<scalar_t, acc_t>& c, acc_t* lse_scratch, LaunchTarget on);

// --- listwise KD --------------------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
struct KDRowsCall {
  PLRowsView<scalar_t> v;  // the student's scores
  const scalar_t* teacher;
  double ts, tt;                     // the student's and the teacher's temperature
  bool* args_ok = nullptr;           // [B]: whether lengths[b] is in [0, n] (when given)
  acc_t* row_loss = nullptr;         // [B], or nullptr
  const scalar_t* grad = nullptr;    // upstream gradient (scalar or [B]); nullptr: 1
  Reduction reduction = Reduction::Mean;
  scalar_t* grad_student = nullptr;  // [B, n], or nullptr: no gradients
  scalar_t* grad_teacher = nullptr;  // [B, n], or nullptr
};

// Everything c asks for in one launch: a warp per row up to kMaxWarpRowItems, else a block.
template <typename scalar_t, typename acc_t>
void listwise_kd_rows(const KDRowsCall<scalar_t, acc_t>& c, LaunchTarget on);

}  // namespace kdops::cuda::plackett_luce
