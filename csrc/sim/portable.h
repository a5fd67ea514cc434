// Kernel-source helpers that read the same under nvcc and under the CUDA simulator.
#pragma once

#ifndef KDOPS_SIM
// The block's dynamic shared memory as `type name[]` (16-byte aligned). The simulator
// (csrc/sim/cuda_sim.h) defines its own version.
#define KDOPS_DYNAMIC_SMEM(type, name) extern __shared__ __align__(16) type name[]
#endif
