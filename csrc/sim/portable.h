// Kernel-source helpers that read the same under nvcc and under the CUDA simulator (g++ with
// cuda_sim.h force-included). Include it from .cu files; it needs nothing else.
#pragma once

// KDOPS_DYNAMIC_SMEM(T, name): `name` is the block's dynamic shared memory as a T array (the
// launch's dynamic_smem_bytes, 16-byte aligned). `extern __shared__` arrays cannot be emulated
// portably (they become undefined TLS symbols under g++), hence the macro. Under the simulator
// the buffer is allocated per block with exactly the launch's size, so AddressSanitizer sees
// overflows, and filled with 0xFF bytes, so reads before writes give deterministic garbage
// (NaN for floats, -1 for integers).
#if defined(KDOPS_SIM)
#define KDOPS_DYNAMIC_SMEM(T, name) T* const name = static_cast<T*>(::kdops::sim::detail::dynamic_smem())
#else
#define KDOPS_DYNAMIC_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif
