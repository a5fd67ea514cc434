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

// The kernel line that calls a helper (block_sum, shfl_down, ...), threaded down to the barriers
// and collectives the helper makes, so that the simulator's errors name the kernel's line and
// not only the helper's. A helper takes KDOPS_CALLER as its last parameter (defaulted to the
// line calling it), passes KDOPS_FORWARD_CALLER to the helpers it calls, and ends its barriers
// and collectives' arguments with KDOPS_SITE (after the width, for shuffles; KDOPS_SITE_ONLY
// for __syncthreads()). Under nvcc all four are empty.
#if defined(KDOPS_SIM)
#define KDOPS_CALLER , const char *kdops_caller_file = __builtin_FILE(), int kdops_caller_line = __builtin_LINE()
#define KDOPS_FORWARD_CALLER , kdops_caller_file, kdops_caller_line
#define KDOPS_SITE_ONLY __builtin_FILE(), __builtin_LINE(), kdops_caller_file, kdops_caller_line
#define KDOPS_SITE , KDOPS_SITE_ONLY
#else
#define KDOPS_CALLER
#define KDOPS_FORWARD_CALLER
#define KDOPS_SITE_ONLY
#define KDOPS_SITE
#endif
