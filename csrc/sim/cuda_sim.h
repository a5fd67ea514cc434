// The CUDA simulator's one header: compile a .cu file with
//   g++ -x c++ -DKDOPS_SIM -include csrc/sim/cuda_sim.h -fno-extern-tls-init ...
// and link csrc/sim/runtime.cpp and csrc/sim/fiber.cpp. Each CUDA thread then runs as a fiber
// on the CPU, with checks for barrier divergence, bad warp collectives and deadlocks; see
// runtime.cpp for the execution model and the README for what it proves and what it cannot.
#pragma once

#if defined(__CUDACC__)
#error "cuda_sim.h is for g++; nvcc compiles the .cu files as they are"
#endif

#include "host_api.h"
#include "keywords.h"
#include "runtime_api.h"
#include "intrinsics.h"
#include "half.h"
#include "wmma.h"
#include "portable.h"
