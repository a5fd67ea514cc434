// Launchers of the Plackett-Luce family's kernels, called by the ops in plackett_luce_cuda.cpp.
// Each call is one launch: rows of at most kMaxWarpRowItems items are computed by one warp each
// (plackett_luce_warp_kernels.cu), longer rows by one block each (plackett_luce_kernels.cu: the
// ranking sorted in the block's shared memory, then the loss or the gradients); listwise KD takes
// a warp or a block per row by the same rule (listwise_kd_kernels.cu). The same launch reduces
// the rows' losses and their index checks over the grid (RowsOut). Pointers are device memory;
// scalar_t and acc_t as KDOPS_FOR_FLOATING_TYPES; the optional ones (lengths, first, values,
// outputs) may be nullptr.
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

// A temperature: a value the op has on the host, or a 0-dim float32 / float64 tensor in device
// memory that the kernel reads (a learned temperature: no device-to-host read, no sync).
struct Temperature {
  double value = 1;
  const void* at = nullptr;  // the tensor's data, or nullptr: `value`
  bool is_double = false;

  __device__ double get() const {
    if (at == nullptr) return value;
    return is_double ? *static_cast<const double*>(at) : static_cast<double>(*static_cast<const float*>(at));
  }
};

// Sums a kernel reduces over its rows: the loss, and the gradients of up to two temperatures.
constexpr int kRowSums = 3;

// What a kernel reduces over its rows in its own launch (the last block of grid_sum.cuh): the
// loss for 'mean' / 'sum', the temperatures' gradients, and whether every row passed the index
// checks, which the op asserts on the device. The grid_sum scratch (kRowSums partials a block) is
// needed when one of those is asked for and the grid has more than one block (else nullptr).
template <typename scalar_t, typename acc_t>
struct RowsOut {
  scalar_t* loss = nullptr;     // 'none': [B], a row's loss each; else the 0-dim loss; nullptr: no loss
  // dL/dT at an upstream gradient of 1 ('mean': over B), in acc_t: 'none' [B], else 0-dim; of
  // listwise KD's student and teacher temperatures, or PLD's one in [0]; nullptr: not asked.
  acc_t* temperature_grad[2] = {nullptr, nullptr};
  bool* args_ok = nullptr;      // 0-dim: every lengths[b] in [0, n] and first[b] in [0, n) (when given)
  bool* ranking_ok = nullptr;   // 0-dim: every given ranking row a permutation (checked when given)
  bool* temperature_ok[2] = {nullptr, nullptr};  // 0-dim: that temperature positive and finite (read on the device)
  acc_t* partial_sums = nullptr;
  long long* partial_count = nullptr;
  unsigned int* done = nullptr;
};

// What one call of the PL kernels computes for every row. The ranking [B, n] is either given
// (keys == nullptr: a user's ranking, or a forward's in a backward) or computed from keys: each
// row's valid items by descending key (ties to the lower index), first[b] (PLD's true class)
// forced to the front, padding columns after them in index order.
template <typename scalar_t, typename acc_t>
struct PLRowsCall {
  PLRowsView<scalar_t> v;
  WeightMode mode = WeightMode::Unit;
  const scalar_t* values = nullptr;  // weights or teacher [B, n]
  Temperature temperature;           // PLD's
  const scalar_t* keys = nullptr;    // rank by these ([B, n]), or nullptr: the ranking is given
  const int64_t* first = nullptr;    // [B], with keys
  int64_t* ranking = nullptr;        // [B, n]: read, or written when ranked here
  RowsOut<scalar_t, acc_t> out;      // the loss and the checks' flags (out.ranking_ok: check the ranking)
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

// Whether the kernels below rank rows of c.v.n items from c.keys in a block's shared memory;
// else the op sorts them first (at::sort, then move_to_front) and passes the ranking, keys nullptr.
template <typename scalar_t, typename acc_t>
bool ranks_in_block(const PLRowsCall<scalar_t, acc_t>& c);

// ranking[b] = order[b] with first[b] moved to the front.
void move_to_front(const int64_t* order, const int64_t* first, int64_t B, int64_t n, int64_t* ranking,
                   LaunchTarget on);

// The loss of the ranking in c.ranking (ranked first when c.keys is given); bitmap: [B, ceil(n/32)]
// words (any values: each block zeroes its row's) for the permutation check when c.out.ranking_ok
// is given.
template <typename scalar_t, typename acc_t>
void forward(const PLRowsCall<scalar_t, acc_t>& c, unsigned int* bitmap, LaunchTarget on);

// The gradients (and the loss when c.out.loss is given) of the ranking in c.ranking (ranked first
// when c.keys is given); lse_scratch [B, n].
template <typename scalar_t, typename acc_t>
void backward(const PLRowsCall<scalar_t, acc_t>& c, acc_t* lse_scratch, LaunchTarget on);

// The blocks of the one launch of a call on B rows of n items (what RowsOut's grid_sum scratch is
// sized by): kRowsPerWarpBlock rows a block, a warp each, up to kMaxWarpRowItems; else a row a block.
constexpr int64_t kRowsPerWarpBlock = 8;
inline int64_t row_blocks(int64_t B, int64_t n) {
  return n <= kMaxWarpRowItems ? (B + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock : B;
}

// --- listwise KD --------------------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
struct KDRowsCall {
  PLRowsView<scalar_t> v;  // the student's scores
  const scalar_t* teacher;
  Temperature ts, tt;                // the student's and the teacher's temperature
  RowsOut<scalar_t, acc_t> out;      // the loss and the lengths check's flag
  const scalar_t* grad = nullptr;    // upstream gradient (scalar or [B]); nullptr: 1
  Reduction reduction = Reduction::Mean;
  scalar_t* grad_student = nullptr;  // [B, n], or nullptr: no gradients
  scalar_t* grad_teacher = nullptr;  // [B, n], or nullptr
};

// Everything c asks for in one launch: a warp per row up to kMaxWarpRowItems, else a block.
template <typename scalar_t, typename acc_t>
void listwise_kd_rows(const KDRowsCall<scalar_t, acc_t>& c, LaunchTarget on);

}  // namespace kdops::cuda::plackett_luce
