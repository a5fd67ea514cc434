// MaxSim panel kernels (maxsim_panel.h): the ISA choice, and the generic kernel. One body
// (maxsim_panel_body.h) is compiled per ISA by `#pragma GCC target` in its own file, so setup.py's
// flags stay those of a portable build:
//   avx512 (maxsim_panel_avx512.cpp): 64-byte vectors, FMA
//   avx2 (maxsim_panel_avx2.cpp): 32-byte vectors, FMA
//   generic (here): 16-byte vectors of the build's baseline (SSE2 on x86-64, NEON on aarch64),
//            ISO rounding (a * b + c, no forced contraction)
#include "cpu/maxsim_panel.h"
#include "cpu/maxsim_panel_body.h"

namespace kdops::cpu {

template <typename acc_t>
void panel_generic(KDOPS_PANEL_PARAMS(acc_t)) {
  panel_body<acc_t, 16 / sizeof(acc_t)>(panel, doc, length, dim, valid, first, best_io, arg_io, stream);
}

template <typename acc_t>
MaxSimPanelKernel<acc_t> maxsim_panel_kernel(CpuIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == CpuIsa::avx512) return {2 * 64 / sizeof(acc_t), &panel_avx512<acc_t>};
  if (isa == CpuIsa::avx2) return {2 * 32 / sizeof(acc_t), &panel_avx2<acc_t>};
#endif
  return {2 * 16 / sizeof(acc_t), &panel_generic<acc_t>};
}

template void panel_generic<float>(KDOPS_PANEL_PARAMS(float));
template void panel_generic<double>(KDOPS_PANEL_PARAMS(double));
template MaxSimPanelKernel<float> maxsim_panel_kernel<float>(CpuIsa);
template MaxSimPanelKernel<double> maxsim_panel_kernel<double>(CpuIsa);

}  // namespace kdops::cpu
