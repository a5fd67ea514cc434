// Shared by the CPU (.cpp) and CUDA (.cu) kernels: the per-element and per-row math of every
// op is written once, in inline functions marked KDOPS_HD, so the CPU tests exercise it too.
#pragma once

#if defined(__CUDACC__)
#define KDOPS_HD __host__ __device__ __forceinline__
#else
#define KDOPS_HD inline
#endif

// The op library's namespace: kdops for the extension, another name (e.g. kdops_sim, built from
// the same sources with -DKDOPS_NS=kdops_sim) for a second library with the same schemas.
#ifndef KDOPS_NS
#define KDOPS_NS kdops
#endif
#define KDOPS_STRINGIFY_(x) #x
#define KDOPS_STRINGIFY(x) KDOPS_STRINGIFY_(x)
#define KDOPS_NS_STR KDOPS_STRINGIFY(KDOPS_NS)
