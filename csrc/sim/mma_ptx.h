// The PTX warp-level matrix instructions for the simulator (part of cuda_sim.h; also max.NaN.f32), with the fragment
// layouts the PTX ISA documents ("Warp-level matrix load instruction: ldmatrix" and "Matrix
// fragments for mma.m16n8k16 with floating point type"); csrc/cuda/mma_ptx.cuh calls these under
// KDOPS_SIM and emits the instructions themselves under nvcc. Unlike wmma.h (whole tile in every
// lane, layout hidden), each lane holds exactly the registers the hardware gives it, so a kernel
// that reads a fragment element by element must use the documented layout or get wrong results.
//
// Registers are .b32 holding two 16-bit elements, the lower-indexed element in the low half (as a
// 32-bit load of two consecutive elements gives it). groupID = lane / 4, tig = lane % 4:
//   ldmatrix m8n8 .x1/.x2/.x4: lanes 8i..8i+7 give the row addresses of matrix i (16 contiguous,
//     16-byte aligned bytes each); register i of lane t holds row groupID, columns 2 tig, 2 tig + 1
//     of matrix i (.trans: of its transpose, i.e. column groupID, rows 2 tig, 2 tig + 1).
//   mma.m16n8k16.row.col: A (16x16) a[0] = A[g][2 tig..], a[1] = A[g + 8][2 tig..],
//     a[2] = A[g][2 tig + 8..], a[3] = A[g + 8][2 tig + 8..]; B (16x8) b[0] = B[2 tig..][g],
//     b[1] = B[2 tig + 8..][g]; C and D (16x8 fp32) c[0], c[1] = C[g][2 tig], C[g][2 tig + 1],
//     c[2], c[3] = C[g + 8][2 tig], C[g + 8][2 tig + 1].
//   mma.m16n8k32.row.col.s32.s8.s8.s32 ("Matrix fragments for mma.m16n8k32" with .s8): registers
//     hold four 8-bit elements, the lowest-indexed in the lowest byte. A (16x32) a[0] =
//     A[g][4 tig..4 tig + 3], a[1] = A[g + 8][4 tig..], a[2] = A[g][4 tig + 16..], a[3] =
//     A[g + 8][4 tig + 16..]; B (32x8) b[0] = B[4 tig..4 tig + 3][g], b[1] = B[4 tig + 16..][g];
//     C and D (16x8 s32) as the fp32 C and D above. (So ldmatrix's b16 rows, read as 16 bytes,
//     feed it as they feed m16n8k16: register i of a lane holds 4 consecutive bytes of a row.)
// Arithmetic: the products of two fp16 or two bf16 values are exact in fp32; the simulator adds
// them to C in fp32, k ascending, each sum rounded to nearest. The PTX ISA leaves the order and
// the intermediate rounding of the tensor core's sum unspecified (they differ on real GPUs), so
// results match a GPU's only to fp32 tolerances, not bit for bit. The s8 mma is integer
// arithmetic: exact, and the same on every GPU (without .satfinite the s32 sum wraps modulo 2^32,
// as the simulator's does).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "access_record.h"
#include "half.h"
#include "runtime_api.h"

namespace kdops::sim::ptx {

namespace detail {

using kdops::sim::detail::Site;

template <int kNum, bool kTrans>
struct LdmatrixCall {
  uint32_t* regs;  // kNum registers of this lane
  const void* row;
  static void complete(void* const* lane_data) {
    // Matrix i's 8 x 8 elements, read through the row addresses of lanes 8i..8i+7 (the others'
    // addresses are unused, as the PTX ISA says for .x1 and .x2).
    uint16_t m[kNum][8][8];
    for (int i = 0; i < kNum; ++i) {
      for (int r = 0; r < 8; ++r) {
        const int lane = 8 * i + r;
        const void* row = static_cast<LdmatrixCall*>(lane_data[lane])->row;
        if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
          const std::string message = "ldmatrix: lane " + std::to_string(lane) +
                                      "'s row address is not 16-byte aligned (each row is 16 contiguous bytes)";
          kdops::sim::detail::fail(message.c_str());
        }
        std::memcpy(m[i][r], row, 16);
      }
    }
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, tig = lane % 4;
      uint32_t* regs = static_cast<LdmatrixCall*>(lane_data[lane])->regs;
      for (int i = 0; i < kNum; ++i) {
        const uint16_t lo = kTrans ? m[i][2 * tig][g] : m[i][g][2 * tig];
        const uint16_t hi = kTrans ? m[i][2 * tig + 1][g] : m[i][g][2 * tig + 1];
        regs[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
      }
    }
  }
};

// The 16-bit element of a register: half 0 (low) or 1 (high), widened exactly.
template <typename T>
float element(uint32_t reg, int half) {
  return static_cast<float>(T::from_bits(static_cast<uint16_t>(reg >> (16 * half))));
}

template <typename T>
struct MmaCall {
  float* d;
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
  static void complete(void* const* lane_data) {
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
      const MmaCall& call = *static_cast<MmaCall*>(lane_data[lane]);
      const int g = lane / 4, tig = lane % 4;
      for (int h = 0; h < 2; ++h) {
        const int col = 2 * tig + h;
        A[g][col] = element<T>(call.a[0], h);
        A[g + 8][col] = element<T>(call.a[1], h);
        A[g][col + 8] = element<T>(call.a[2], h);
        A[g + 8][col + 8] = element<T>(call.a[3], h);
        B[col][g] = element<T>(call.b[0], h);
        B[col + 8][g] = element<T>(call.b[1], h);
        C[g][col] = call.c[h];
        C[g + 8][col] = call.c[2 + h];
      }
    }
    float D[16][8];
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 8; ++j) {
        float acc = C[i][j];
        for (int k = 0; k < 16; ++k) acc += A[i][k] * B[k][j];  // exact products, fp32 sums
        D[i][j] = acc;
      }
    }
    // d may alias c: written only now, after every lane's c was read.
    for (int lane = 0; lane < 32; ++lane) {
      float* d = static_cast<MmaCall*>(lane_data[lane])->d;
      const int g = lane / 4, tig = lane % 4;
      for (int h = 0; h < 2; ++h) {
        d[h] = D[g][2 * tig + h];
        d[2 + h] = D[g + 8][2 * tig + h];
      }
    }
  }
};

// Byte `index` (0 = lowest) of a register, as the signed 8-bit element it holds.
inline int32_t s8_element(uint32_t reg, int index) {
  return static_cast<int8_t>(static_cast<uint8_t>(reg >> (8 * index)));
}

struct MmaS8Call {
  int32_t* d;
  const uint32_t* a;
  const uint32_t* b;
  const int32_t* c;
  static void complete(void* const* lane_data) {
    int32_t A[16][32], B[32][8], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
      const MmaS8Call& call = *static_cast<MmaS8Call*>(lane_data[lane]);
      const int g = lane / 4, tig = lane % 4;
      for (int e = 0; e < 4; ++e) {
        const int col = 4 * tig + e;
        A[g][col] = s8_element(call.a[0], e);
        A[g + 8][col] = s8_element(call.a[1], e);
        A[g][col + 16] = s8_element(call.a[2], e);
        A[g + 8][col + 16] = s8_element(call.a[3], e);
        B[col][g] = s8_element(call.b[0], e);
        B[col + 16][g] = s8_element(call.b[1], e);
      }
      for (int h = 0; h < 2; ++h) {
        C[g][2 * tig + h] = call.c[h];
        C[g + 8][2 * tig + h] = call.c[2 + h];
      }
    }
    int32_t D[16][8];
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 8; ++j) {
        uint32_t acc = static_cast<uint32_t>(C[i][j]);  // unsigned: the s32 sum wraps, as on the GPU
        for (int k = 0; k < 32; ++k) acc += static_cast<uint32_t>(A[i][k] * B[k][j]);
        D[i][j] = static_cast<int32_t>(acc);
      }
    }
    // d may alias c: written only now, after every lane's c was read.
    for (int lane = 0; lane < 32; ++lane) {
      int32_t* d = static_cast<MmaS8Call*>(lane_data[lane])->d;
      const int g = lane / 4, tig = lane % 4;
      for (int h = 0; h < 2; ++h) {
        d[h] = D[g][2 * tig + h];
        d[2 + h] = D[g + 8][2 * tig + h];
      }
    }
  }
};

}  // namespace detail

// ldmatrix.sync.aligned.m8n8.x{kNum}{.trans if kTrans}.shared.b16 regs, [row]: a warp collective
// (all 32 lanes, each passing its row address; only lanes < 8 kNum's are read).
template <int kNum, bool kTrans>
void ldmatrix(uint32_t (&regs)[kNum], const void* row, const char* file = __builtin_FILE(),
              int line = __builtin_LINE(), const char* caller_file = nullptr, int caller_line = 0) {
  static_assert(kNum == 1 || kNum == 2 || kNum == 4, "ldmatrix loads 1, 2 or 4 matrices");
  using Call = detail::LdmatrixCall<kNum, kTrans>;
#if defined(KDOPS_SIM_RECORD)
  if (kdops::sim::detail::current().lane < 8 * kNum) {  // the lanes whose row addresses are read
    KDOPS_SIM_RECORD_ACCESS(kLdmatrix, row, 16, caller_file != nullptr ? caller_file : file,
                            caller_file != nullptr ? caller_line : line);
  }
#endif
  Call call{regs, row};
  kdops::sim::detail::warp_call(kTrans ? "ldmatrix.trans" : "ldmatrix", &call, &Call::complete,
                                detail::Site{file, line, caller_file, caller_line});
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, c (T: __half or
// __nv_bfloat16): a warp collective; d may be c.
template <typename T>
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                  const char* file = __builtin_FILE(), int line = __builtin_LINE(), const char* caller_file = nullptr,
                  int caller_line = 0) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "mma operands are fp16 or bf16");
  using Call = detail::MmaCall<T>;
  Call call{d, a, b, c};
  kdops::sim::detail::warp_call("mma.sync.m16n8k16", &call, &Call::complete,
                                detail::Site{file, line, caller_file, caller_line});
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 d, a, b, c: a warp collective; d may be c.
inline void mma_m16n8k32_s8(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const int32_t (&c)[4],
                            const char* file = __builtin_FILE(), int line = __builtin_LINE(),
                            const char* caller_file = nullptr, int caller_line = 0) {
  detail::MmaS8Call call{d, a, b, c};
  kdops::sim::detail::warp_call("mma.sync.m16n8k32.s8", &call, &detail::MmaS8Call::complete,
                                detail::Site{file, line, caller_file, caller_line});
}

// max.NaN.f32 d, a, b (sm_80+; "Floating Point Instructions: max"): a per-thread instruction.
// With .NaN the result is the canonical NaN (0x7fffffff) when either input is NaN; otherwise the
// larger input, +0.0 above -0.0 (IEEE 754-2019 maximum, which LLVM lowers to this instruction).
inline float max_nan(float a, float b) {
  if (a != a || b != b) {
    const uint32_t canonical = 0x7fffffffu;
    float nan;
    std::memcpy(&nan, &canonical, 4);
    return nan;
  }
  if (a == b) return std::signbit(a) ? b : a;  // equal: only +0 and -0 differ in bits
  return a > b ? a : b;
}

}  // namespace kdops::sim::ptx
