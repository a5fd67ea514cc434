// CUDA's keywords and built-in types for a g++ translation unit (part of cuda_sim.h).
#pragma once

#include <cstddef>
#include <cstdint>

// Function space qualifiers mean nothing on the CPU. __noinline__ is left alone: libstdc++ spells
// __attribute__((__noinline__)) and a macro would break it.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// Shared memory is per block. A block's threads are fibers of one OS thread and an OS thread runs
// one block at a time, so thread-local storage is exactly block storage (static, function- and
// namespace-scope alike). Write `alignas(N) __shared__ T x[...]`, never `__shared__ alignas(N)`.
// Dynamic shared memory: KDOPS_DYNAMIC_SMEM in portable.h.
#define __shared__ thread_local

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// Vector types with CUDA's sizes and alignments (vectorised loads reinterpret_cast to them).
#define KDOPS_SIM_VECTOR2(T, name, align) \
  struct alignas(align) name {            \
    T x, y;                               \
  };                                      \
  inline name make_##name(T x, T y) { return name{x, y}; }
#define KDOPS_SIM_VECTOR4(T, name, align) \
  struct alignas(align) name {            \
    T x, y, z, w;                         \
  };                                      \
  inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
KDOPS_SIM_VECTOR2(float, float2, 8)
KDOPS_SIM_VECTOR4(float, float4, 16)
KDOPS_SIM_VECTOR2(int, int2, 8)
KDOPS_SIM_VECTOR4(int, int4, 16)
KDOPS_SIM_VECTOR2(unsigned int, uint2, 8)
KDOPS_SIM_VECTOR4(unsigned int, uint4, 16)
KDOPS_SIM_VECTOR2(double, double2, 16)
KDOPS_SIM_VECTOR2(long long, longlong2, 16)
#undef KDOPS_SIM_VECTOR2
#undef KDOPS_SIM_VECTOR4
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }

constexpr int warpSize = 32;
