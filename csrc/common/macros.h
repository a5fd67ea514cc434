// Shared by the CPU (.cpp) and CUDA (.cu) kernels: the per-element and per-row math of every
// op is written once, in inline functions marked KDOPS_HD, so the CPU tests exercise it too.
#pragma once

#if defined(__CUDACC__)
#define KDOPS_HD __host__ __device__ __forceinline__
#else
#define KDOPS_HD inline
#endif

// The torch.ops namespace the ops are registered under: kdops for kdops._C, kdops_sim for the
// CUDA kernels built for the simulator (kdops._C_sim, -DKDOPS_NS=kdops_sim).
#ifndef KDOPS_NS
#define KDOPS_NS kdops
#endif
