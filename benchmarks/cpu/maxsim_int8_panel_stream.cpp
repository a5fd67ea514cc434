// The int8 x int8 MaxSim panel kernel alone (csrc/cpu/maxsim_int8_panel.h, the CPU's own choice
// of path) at the reranking shape: one panel of 32 query rows against 1000 docs x 300 tokens x
// d = 128, a token block at a time, as Int8Policy (maxsim_serving_policies.h) calls it, with the
// docs streamed from DRAM (38 MB, each read once) and with 10 of them hot in L2 (read 100 times). GOP/s (2 per int8 product) in process CPU time, best of 5; against the
// vpdpbusd rows of benchmarks/cpu/fma_peak.cpp this is the kernel's fraction of the core's
// int8 peak, free of the op's dispatch (python -m benchmarks.run --ops maxsim_serving times the op).
//
//   g++ -O3 -std=c++20 -Icsrc -o /tmp/int8_panel_stream benchmarks/cpu/maxsim_int8_panel_stream.cpp csrc/cpu/maxsim_int8_panel.cpp csrc/cpu/maxsim_int8_panel_vnni.cpp && /tmp/int8_panel_stream
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cpu/maxsim_int8_panel.h"
#include "stream_rate.h"

namespace {

constexpr int64_t kDocs = 1000, kLength = 300, kDim = 128, kRows = kdops::cpu::kInt8PanelRows;
constexpr int64_t kBlock = 16384 / kDim;  // maxsim_serving_driver.h's token block (kServingBlockElems / d)

// The query panel (int8_pack_panel), on a cache line as the policy's vector places it, and its
// rows' start values.
alignas(64) int8_t panel[kDim * kRows];
int32_t row_start[kRows];

// GOP/s of `passes` passes over the first `docs` docs (best of 5).
double run(const kdops::cpu::MaxSimInt8PanelKernel& kernel, const std::vector<int8_t>& docs_rows,
           const std::vector<float>& scale, int64_t docs, int64_t passes, float& sink) {
  return kdops_bench::best_rate(docs, passes, 2.0 * kLength * kRows * kDim, [&](int64_t k) {
    sink += kdops_bench::doc_maxima<kRows>(kLength, kBlock, [&](int64_t j0, int64_t n, float* max, int32_t* arg) {
      const int64_t row = k * kLength + j0;
      kernel.fn(panel, row_start, docs_rows.data() + row * kDim, n, kDim, scale.data() + row, nullptr,
                static_cast<int32_t>(j0), max, arg);
    });
  });
}

}  // namespace

int main() {
  const kdops::cpu::MaxSimInt8PanelKernel kernel = kdops::cpu::maxsim_int8_panel_kernel(kdops::cpu::CpuIsa::avx512);
  std::vector<int8_t> docs_rows(kDocs * kLength * kDim);
  std::vector<float> scale(kDocs * kLength);
  for (int8_t& x : docs_rows) x = static_cast<int8_t>(std::rand() % 255 - 127);
  for (float& s : scale) s = 1e-3f * (1 + std::rand() % 1000);
  std::vector<int8_t> query(kRows * kDim);
  for (int8_t& x : query) x = static_cast<int8_t>(std::rand() % 255 - 127);
  kdops::cpu::int8_pack_panel(query.data(), kRows, kDim, panel, row_start);
  float sink = 0;
  std::printf("kernel: %s\n", kernel.name);
  std::printf("streamed (1000 docs, once each): %.1f GOP/s\n", run(kernel, docs_rows, scale, kDocs, 1, sink));
  std::printf("hot (10 docs in L2, 100 passes): %.1f GOP/s\n", run(kernel, docs_rows, scale, 10, 100, sink));
  return sink == 0.12345f;  // keeps the results alive
}
