// KDOPS_CPU_CLONES: a row loop compiled for AVX-512, AVX2 + FMA and the baseline, the loader
// picking the best the machine runs (GCC / clang function multiversioning). The baseline alone
// (SSE2) has a quarter of the vector width ATen's own kernels dispatch to, and no FMA.
// The clones name x86-64 ISA levels (v4: AVX-512; v3: AVX2, FMA, BMI2), which the resolver tests
// by CPU features. "arch=haswell" would name a CPU model: GCC's resolver then compares the CPU's
// model number with Haswell's, so every AVX2 machine other than an Intel Haswell (AMD Zen, Intel
// Alder Lake, ...) ran the SSE2 baseline, rounding each x * scale that the FMA keeps exact.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define KDOPS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KDOPS_CPU_CLONES
#endif
