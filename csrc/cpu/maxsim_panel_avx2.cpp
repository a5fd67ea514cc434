// The MaxSim panel kernel for AVX2 (maxsim_panel_body.h): 32-byte vectors, products
// contracted into FMAs. Only called where the CPU has it (maxsim_panel.cpp checks).
#if defined(__x86_64__) || defined(__i386__)
#include <cstdint>
#include <cstring>

#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#include "cpu/maxsim_panel_body.h"

namespace kdops::cpu {

template <typename acc_t>
void panel_avx2(KDOPS_PANEL_PARAMS(acc_t)) {
  panel_body<acc_t, 32 / sizeof(acc_t)>(panel, doc, length, dim, valid, first, best_io, arg_io, stream);
}

template void panel_avx2<float>(KDOPS_PANEL_PARAMS(float));
template void panel_avx2<double>(KDOPS_PANEL_PARAMS(double));

}  // namespace kdops::cpu
#endif
