// How much work one task of a parallel region must hold. With a core taken by another process,
// a parallel region ends only when its descheduled thread gets a core back: about a scheduler
// time slice (Linux's EEVDF base slice is 0.75 ms x (1 + log2 CPUs): 1.5 ms on 2 CPUs). Measured
// (issue #30, 2 vCPUs, 2 torch threads, one other process spinning): ListMLE B=256 n=64
// forward + backward, 16k items of ~10 ns each, went from 0.11 ms to 6.8 ms a call. A region
// whose tasks hold less than a slice of work loses more waiting than it gains, so at::parallel_for
// gets a grain of at least kTaskNs of estimated work: a range below it runs inline on the calling
// thread, with no parallel region at all. (On an idle machine that gives up the second thread's
// speed-up for calls under 2 x kTaskNs of work.)
#pragma once

#include <algorithm>
#include <cstdint>

namespace kdops::cpu {

constexpr double kTaskNs = 1.5e6;

// at::parallel_for's grain for units (rows, chunks) of about unit_ns nanoseconds each.
inline int64_t parallel_grain(double unit_ns) {
  return std::max<int64_t>(1, static_cast<int64_t>(kTaskNs / std::max(unit_ns, 1.0)));
}

}  // namespace kdops::cpu
