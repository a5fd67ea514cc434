// The timing of the kernel-alone programs (maxsim_panel_stream.cpp, maxsim_int8_panel_stream.cpp):
// passes over a run of docs, each doc's maxima folded by the program's kernel, in process CPU time.
#pragma once

#include <cstdint>
#include <ctime>

namespace kdops_bench {

inline double process_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Giga-operations per second of `passes` passes over docs 0 .. docs - 1, each `doc_ops`
// operations, the best of 5; score(k) scores doc k.
template <typename Score>
double best_rate(int64_t docs, int64_t passes, double doc_ops, Score score) {
  double best = 0;
  for (int repeat = 0; repeat < 5; ++repeat) {
    const double start = process_seconds();
    for (int64_t p = 0; p < passes; ++p)
      for (int64_t k = 0; k < docs; ++k) score(k);
    const double rate = doc_ops * passes * docs / (process_seconds() - start) / 1e9;
    if (rate > best) best = rate;
  }
  return best;
}

// One doc's running maxima of kRows query rows, a token block at a time as the ops fold them:
// fold(j0, n, max, arg) folds tokens j0 .. j0 + n - 1. Returns a sum of the results, for the
// caller to keep alive.
template <int64_t kRows, typename Fold>
float doc_maxima(int64_t length, int64_t block, Fold fold) {
  float max[kRows] = {};
  int32_t arg[kRows];
  for (int32_t& a : arg) a = -1;
  for (int64_t j0 = 0; j0 < length; j0 += block) fold(j0, length - j0 < block ? length - j0 : block, max, arg);
  float sum = 0;
  for (int64_t r = 0; r < kRows; ++r) sum += max[r] + arg[r];
  return sum;
}

}  // namespace kdops_bench
