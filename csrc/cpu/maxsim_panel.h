// The MaxSim forward micro-kernel, chosen at run time for the CPU's vector ISA.
//
// One call folds a run of one doc's tokens into the running max of one panel of query token
// rows: for each tile of kTokens doc tokens it accumulates the tile x panel similarities in
// vector registers (FMAs over d), then takes the max and first-index argmax there (common/maxsim.h takes_max, the
// NaN and tie rules) — no similarity block is written to memory. Each doc row is read once per
// panel, the rows ahead prefetched as it goes (stream_prefetch.h). The structure, for kernels of
// other element types (quantized) to follow, with what each part bought: docs/performance.md.
#pragma once

#include <cstdint>

#include "cpu/cpu_isa.h"
#include "cpu/stream_prefetch.h"

namespace kdops::cpu {

// panel: [dim][rows] query rows transposed; doc: [length][dim] token rows, the doc's tokens
// first .. first + length - 1; valid: [length] or nullptr. best / arg: [rows], the running max
// and first maximal token so far (arg -1: no valid token yet), updated with these tokens.
// stream: rows prefetched as the kernel goes, one per doc row (PrefetchRows{nullptr, 0}: the doc's
// own rows ahead).
template <typename acc_t>
struct MaxSimPanelKernel {
  int64_t rows;
  void (*fn)(const acc_t* panel, const acc_t* doc, int64_t length, int64_t dim, const bool* valid,
             int32_t first, acc_t* best, int32_t* arg, PrefetchRows stream);
};

template <typename acc_t>
MaxSimPanelKernel<acc_t> maxsim_panel_kernel(CpuIsa isa);

}  // namespace kdops::cpu
