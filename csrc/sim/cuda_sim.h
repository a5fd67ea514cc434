// The CUDA simulator's one header: compile a .cu file with
//   g++ -std=c++20 -x c++ -DKDOPS_SIM -include csrc/sim/cuda_sim.h -fno-extern-tls-init
//       -isystem csrc/sim/include ...   (one command line)
// (csrc/sim/include: empty <mma.h>, <cuda_fp16.h>, ... so that .cu files include them unchanged)
// and link csrc/sim/*.cpp (they compile with or without these flags) and -ldl. Each CUDA thread
// then runs as a fiber on the CPU, with checks for barrier divergence, bad warp collectives and
// deadlocks; see runtime.cpp for the execution model, tests/sim/ for the checks at work, and the
// README for what the simulator proves and what it cannot. x86-64 only (fiber.cpp).
#pragma once

#if defined(__CUDACC__)
#error "cuda_sim.h is for g++; nvcc compiles the .cu files as they are"
#endif

#include "access_record.h"
#include "guarded_heap.h"
#include "host_api.h"
#include "keywords.h"
#include "runtime_api.h"
#include "intrinsics.h"
#include "half.h"
#include "wmma.h"
#include "mma_ptx.h"
#include "portable.h"
