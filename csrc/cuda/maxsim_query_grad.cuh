// MaxSim dQ from the saved argmax, deterministic (no atomics, the columns k summed in order):
//   dQ[q, i] = sum_k w[q, k] * D_doc(q,k)[argmax[q, k, i]]        (the gradient of common/maxsim.h)
//
// A group of G lanes (a power of two: the fewest that cover d in loads of V elements, at most
// a warp) owns one (q, i) row, so a warp takes 32 / G rows. Lane s of a group owns the V
// features of load s of each pass over d (passes of G * V features; one for d <= 32 V). Per
// pass the group's lanes read G columns' saved indices and weights at once (one load each, not a
// dependent argmax -> D chain per column), then take them kInFlight columns at a time: the
// kInFlight D-row loads are issued before any is used, then added to the fp32 (fp64) sums in
// column order, so every run adds the same terms in the same order.
//
// V: 16 / sizeof(scalar_t) (16-byte loads) when every D row and dQ row is 16-byte aligned (d a
// multiple of V, aligned bases: vector_loads); otherwise 1. Those are the only two cases: a row
// of d elements, d not a multiple of V, starts 16-byte aligned only every few rows, so there is
// no aligned body to split from a scalar tail at a fixed lane mapping.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/maxsim.h"

namespace kdops::cuda::query_grad {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kInFlight = 4;  // D-row loads issued before the first is used

// V elements of a row, read or written as one access: a 16-byte one when V fills 16 bytes (the
// alignment makes the compiler emit a single vector load or store).
template <typename scalar_t, int V>
struct alignas(sizeof(scalar_t) * V) Pack {
  scalar_t x[V];
};

// Lanes per row: the smallest power of two >= the loads a row takes, at most 32.
inline int lanes_per_row(int64_t dim, int V) {
  const int64_t loads = (dim + V - 1) / V;
  int g = 1;
  while (g < 32 && g < loads) g *= 2;
  return g;
}

// Grid: any number of blocks; each warp strides over groups of 32 / G rows. Launch bounds with 4
// blocks per SM (a 128-register budget): with the block size alone, ptxas held the fp32 V = 4
// instance to 64 registers on sm_80/86/89 and spilled 8 bytes to the stack (test_static_evidence).
template <typename scalar_t, typename acc_t, int V>
__global__ void __launch_bounds__(kThreads, 4)
    maxsim_query_grad_kernel(MaxSimView<scalar_t> v, int G, const acc_t* w, const int32_t* argmax,
                             scalar_t* dQ) {
  const MaxSimLayout& l = v.layout;
  const int lane = threadIdx.x % 32, sub = lane % G, rows_per_warp = 32 / G;
  const int64_t total = v.Nq * v.Lq, step = int64_t(gridDim.x) * kWarps * rows_per_warp;
  // This lane's row r = q * Lq + i, advanced by `step` rows per iteration without a division (a
  // 64-bit division is a called routine, whose register saves would spill in the loop).
  const int64_t step_q = step / v.Lq, step_i = step - step_q * v.Lq;
  const int64_t first = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * rows_per_warp;
  int64_t r = first + lane / G, q = r / v.Lq, i = r - q * v.Lq;
  // r0 is warp-uniform, so every lane takes part in every shuffle (rows past the end included).
  for (int64_t r0 = first; r0 < total; r0 += step) {
    const bool row_ok = r < total;
    for (int64_t f0 = int64_t(sub) * V; f0 - int64_t(sub) * V < v.dim; f0 += int64_t(G) * V) {
      const bool mine = row_ok && f0 < v.dim;  // this lane's V features exist
      acc_t acc[V];
      for (int e = 0; e < V; ++e) acc[e] = acc_t(0);
      for (int64_t k0 = 0; k0 < l.K; k0 += G) {
        // Lane s reads column k0 + s: its D row (-1: none, the token is masked or the saved
        // index is out of the doc) and weight.
        int64_t token = -1;
        acc_t weight = 0;
        if (row_ok && k0 + sub < l.K) {
          const int64_t k = k0 + sub, doc = l.doc(q, k);
          const int32_t j = argmax[v.argmax_index(q, k, i)];
          if (argmax_in_doc(j, l.length(doc))) {
            token = l.start(doc) + j;
            weight = w[q * l.K + k];
          }
        }
        const int columns = static_cast<int>(std::min<int64_t>(G, l.K - k0));
        for (int c0 = 0; c0 < columns; c0 += kInFlight) {
          int64_t rows[kInFlight];
          acc_t weights[kInFlight];
#pragma unroll
          for (int u = 0; u < kInFlight; ++u) {
            // A source lane past `columns` would wrap around the group: it names no column.
            const int src = std::min(c0 + u, G - 1);
            rows[u] = __shfl_sync(0xffffffffu, token, src, G);
            weights[u] = __shfl_sync(0xffffffffu, weight, src, G);
            if (c0 + u >= columns) rows[u] = -1;
          }
          Pack<scalar_t, V> values[kInFlight];
#pragma unroll
          for (int u = 0; u < kInFlight; ++u)
            if (mine && rows[u] >= 0) values[u] = *reinterpret_cast<const Pack<scalar_t, V>*>(v.D + rows[u] * v.dim + f0);
#pragma unroll
          for (int u = 0; u < kInFlight; ++u)
            if (mine && rows[u] >= 0)
              for (int e = 0; e < V; ++e) acc[e] += weights[u] * static_cast<acc_t>(values[u].x[e]);
        }
      }
      if (mine) {
        Pack<scalar_t, V> out;
        for (int e = 0; e < V; ++e) out.x[e] = static_cast<scalar_t>(acc[e]);
        *reinterpret_cast<Pack<scalar_t, V>*>(dQ + r * v.dim + f0) = out;
      }
    }
    r += step;
    q += step_q;
    i += step_i;
    if (i >= v.Lq) {
      i -= v.Lq;
      ++q;
    }
  }
}

}  // namespace kdops::cuda::query_grad
