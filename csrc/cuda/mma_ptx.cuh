// ldmatrix, mma.sync m16n8k16 (fp16/bf16) and m16n8k32 (int8) (sm_80+), and the per-thread
// max.NaN.f32, behind device functions: under nvcc they emit the PTX instructions, under the
// simulator they call its implementations of the PTX ISA's semantics and fragment layouts
// (csrc/sim/mma_ptx.h, which states the layouts). Every lane of the warp must make each ldmatrix
// and mma call. Register i of a fragment is a .b32 of two 16-bit elements, low half first (of
// four int8 elements, lowest byte first, for m16n8k32).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "sim/portable.h"

namespace kdops::cuda::ptx {

// ldmatrix.sync.aligned.m8n8.x{kNum}{.trans}.shared.b16: lanes 8i..8i+7 pass the shared-memory
// addresses of matrix i's 8 rows (16 bytes each, 16-byte aligned).
template <int kNum, bool kTrans = false>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[kNum], const void* row KDOPS_CALLER) {
  static_assert(kNum == 1 || kNum == 2 || kNum == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(KDOPS_SIM)
  ::kdops::sim::ptx::ldmatrix<kNum, kTrans>(r, row KDOPS_SITE);
#else
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kNum == 1 && !kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
  } else if constexpr (kNum == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
  } else if constexpr (kNum == 2 && !kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
  } else if constexpr (kNum == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(address));
  } else if constexpr (!kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#endif
}

// d = a * b + c: mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32, T = __half or __nv_bfloat16.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                             const float (&c)[4] KDOPS_CALLER) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "mma operands are fp16 or bf16");
#if defined(KDOPS_SIM)
  ::kdops::sim::ptx::mma_m16n8k16<T>(d, a, b, c KDOPS_SITE);
#else
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
  }
#endif
}

// d = a * b + c: mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 (exact integer products and
// sums; no .satfinite, so a sum past int32 would wrap: callers keep d small enough).
__device__ __forceinline__ void mma_m16n8k32_s8(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                const int32_t (&c)[4] KDOPS_CALLER) {
#if defined(KDOPS_SIM)
  ::kdops::sim::ptx::mma_m16n8k32_s8(d, a, b, c KDOPS_SITE);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]),
        "r"(c[3]));
#endif
}

// max.NaN.f32 (sm_80+): the larger of a and b, +0 above -0, and the canonical NaN when either is
// NaN: one instruction for the max under common/maxsim.h's order, where NaN ranks above every
// number (fmaxf would drop the NaN).
__device__ __forceinline__ float max_nan(float a, float b) {
#if defined(KDOPS_SIM)
  return ::kdops::sim::ptx::max_nan(a, b);
#else
  float d;
  asm("max.NaN.f32 %0, %1, %2;\n" : "=f"(d) : "f"(a), "f"(b));
  return d;
#endif
}

}  // namespace kdops::cuda::ptx
