// The AVX-512 fp32 MaxSim panel kernel alone (csrc/cpu/maxsim_panel_body.h) at the reranking
// shape: one panel of 32 query rows against 1000 docs x 300 tokens x d = 128, called per token
// block as csrc/cpu/maxsim_cpu.cpp calls it, with the docs streamed from DRAM (154 MB, each
// read once) and with 10 of them hot in L2 (read 100 times). GFLOP/s in process CPU time, best
// of 5; against benchmarks/cpu/fma_peak.cpp this is the kernel's fraction of the core's peak,
// free of the op's dispatch (python -m benchmarks.run --case reranking times the op).
//
//   g++ -O3 -std=c++20 -Icsrc -o /tmp/panel_stream benchmarks/cpu/maxsim_panel_stream.cpp && /tmp/panel_stream
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma")
#pragma GCC optimize("fp-contract=fast")
#include "cpu/maxsim_panel_body.h"
#include "stream_rate.h"

namespace {

constexpr int64_t kDocs = 1000, kLength = 300, kDim = 128, kRows = 32;
constexpr int64_t kBlock = 16384 / kDim;  // maxsim_cpu.cpp's token block (kBlockElems / d)

// The query panel [d][32 rows], on a cache line as maxsim_cpu.cpp places it.
alignas(64) float panel[kDim * kRows];

// GFLOP/s of `passes` passes over the first `docs` docs (best of 5).
double run(const std::vector<float>& docs_rows, int64_t docs, int64_t passes, float& sink) {
  return kdops_bench::best_rate(docs, passes, 2.0 * kLength * kRows * kDim, [&](int64_t k) {
    sink += kdops_bench::doc_maxima<kRows>(kLength, kBlock, [&](int64_t j0, int64_t n, float* max, int32_t* arg) {
      kdops::cpu::panel_body<float, 16>(panel, docs_rows.data() + (k * kLength + j0) * kDim, n, kDim, nullptr,
                                        static_cast<int32_t>(j0), max, arg, kdops::cpu::PrefetchRows{nullptr, 0});
    });
  });
}

}  // namespace

int main() {
  std::vector<float> docs_rows(kDocs * kLength * kDim);
  for (float& x : docs_rows) x = std::rand() / float(RAND_MAX) - 0.5f;
  for (float& x : panel) x = std::rand() / float(RAND_MAX) - 0.5f;
  float sink = 0;
  std::printf("streamed (1000 docs, once each): %.1f GFLOP/s\n", run(docs_rows, kDocs, 1, sink));
  std::printf("hot (10 docs in L2, 100 passes): %.1f GFLOP/s\n", run(docs_rows, 10, 100, sink));
  return sink == 0.12345f;  // keeps the results alive
}
