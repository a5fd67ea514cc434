// KDOPS_CPU_CLONES: a row loop compiled for AVX-512, AVX2 + FMA and the baseline, the loader
// picking the best the machine runs (GCC / clang function multiversioning). The baseline alone
// (SSE2) has a quarter of the vector width ATen's own kernels dispatch to.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define KDOPS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define KDOPS_CPU_CLONES
#endif
