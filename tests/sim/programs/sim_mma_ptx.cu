// The simulated PTX matrix instructions (csrc/sim/mma_ptx.h, called through csrc/cuda/mma_ptx.cuh:
// ldmatrix, mma m16n8k16 fp16/bf16, mma m16n8k32 s8; also the per-thread max.NaN.f32) against scalar references written from the PTX ISA's fragment tables, and kernels that assume
// a wrong layout, which must give wrong results. Built by tests/sim/simbuild.py like sim_cases.
//
//   sim_mma_ptx <case> [seed] [t|r|w|p][b]
//
// A case prints "ok" and its results in hex when they equal the reference, "differs" (exit 0)
// when they do not (the wrong-layout cases must), "MISMATCH: ..." (exit 4) for a failed check of
// the reference itself, or "ERROR: <message>" (exit 3) when the simulator raised. The kernels are
// plain CUDA: nvcc compiles this file too (the instructions as inline PTX).
#include "program_options.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "csrc/cuda/mma_ptx.cuh"

namespace sim_mma_ptx {  // named, so that error messages can name the kernels

using kdops::cuda::ptx::ldmatrix;
using kdops::cuda::ptx::max_nan;
using kdops::cuda::ptx::mma_m16n8k16;
using kdops::cuda::ptx::mma_m16n8k32_s8;

// The ldmatrix test tile: 32 rows of 16 16-bit elements in shared memory, row stride 24 elements
// (48 bytes: every row 16-byte aligned).
constexpr int kTileRows = 32, kTileCols = 16, kTileStride = 24;

// Lane l passes the address of row row_of[l], column col_of[l] (0 or 8); lane l's registers go
// to out[4 l + i].
template <int kNum, bool kTrans>
__global__ void ldmatrix_kernel(const uint16_t* tile, const int* row_of, const int* col_of, uint32_t* out) {
  alignas(16) __shared__ uint16_t smem[kTileRows * kTileStride];
  const int lane = threadIdx.x;
  for (int e = lane; e < kTileRows * kTileCols; e += 32) smem[(e / kTileCols) * kTileStride + e % kTileCols] = tile[e];
  __syncwarp();
  uint32_t r[kNum];
  ldmatrix<kNum, kTrans>(r, smem + row_of[lane] * kTileStride + col_of[lane]);
  for (int i = 0; i < kNum; ++i) out[4 * lane + i] = r[i];
}

// Two 16-bit values as one register, a first (low half).
__device__ inline uint32_t pack(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

enum class Variant {
  kDocumented,        // fragments packed and read as the PTX ISA's tables say
  kWrongAccumulator,  // reads D as if lane t held row t / 4, columns tig and tig + 4
  kWrongA,            // packs A as if a[1] held columns 8.. and a[2] rows 8.. (a[1] and a[2] swapped)
};

// D (16x8 fp32, row-major) = A (16x16, row-major) * B + C, B given as Bt[n][k] (8 x 16, i.e. B
// column-major), each lane packing its registers from global memory by the fragment tables.
template <typename T, Variant kVariant>
__global__ void mma_kernel(const uint16_t* A, const uint16_t* Bt, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane / 4, tig = lane % 4;
  const auto a_at = [&](int r, int c) { return pack(A[r * 16 + c], A[r * 16 + c + 1]); };
  uint32_t a[4] = {a_at(g, 2 * tig), a_at(g + 8, 2 * tig), a_at(g, 2 * tig + 8), a_at(g + 8, 2 * tig + 8)};
  if (kVariant == Variant::kWrongA) {
    const uint32_t t = a[1];
    a[1] = a[2];
    a[2] = t;
  }
  const uint32_t b[2] = {pack(Bt[g * 16 + 2 * tig], Bt[g * 16 + 2 * tig + 1]),
                         pack(Bt[g * 16 + 2 * tig + 8], Bt[g * 16 + 2 * tig + 9])};
  const float c[4] = {C[g * 8 + 2 * tig], C[g * 8 + 2 * tig + 1], C[(g + 8) * 8 + 2 * tig],
                      C[(g + 8) * 8 + 2 * tig + 1]};
  float d[4];
  mma_m16n8k16<T>(d, a, b, c);
  if (kVariant == Variant::kWrongAccumulator) {
    D[g * 8 + tig] = d[0];
    D[g * 8 + tig + 4] = d[1];
    D[(g + 8) * 8 + tig] = d[2];
    D[(g + 8) * 8 + tig + 4] = d[3];
  } else {
    D[g * 8 + 2 * tig] = d[0];
    D[g * 8 + 2 * tig + 1] = d[1];
    D[(g + 8) * 8 + 2 * tig] = d[2];
    D[(g + 8) * 8 + 2 * tig + 1] = d[3];
  }
}

enum class Feed {
  kBtRows,       // Bt[n][k] in shared memory: B by ldmatrix.x2 (the MaxSim forward's doc tiles)
  kBRowsTrans,   // B[k][n] in shared memory: B by ldmatrix.x2.trans
  kWrongALanes,  // A's ldmatrix.x4 loading the 8x8 blocks column by column: a[1] and a[2] swapped
};

// D = A * B (A row-major, B as `kFeed` says) from shared memory: A by ldmatrix.x4, lane l giving
// row l % 16, column 8 (l / 16), so matrices 0..3 are a[0..3] of the mma's A fragment.
template <typename T, Feed kFeed>
__global__ void ldmatrix_mma_kernel(const uint16_t* A, const uint16_t* B, float* D) {
  constexpr int kStride = 24;  // elements: 48-byte rows, 16-byte aligned
  alignas(16) __shared__ uint16_t a_tile[16 * kStride];
  alignas(16) __shared__ uint16_t b_tile[16 * kStride];
  const int lane = threadIdx.x, g = lane / 4, tig = lane % 4;
  const int b_rows = kFeed == Feed::kBRowsTrans ? 16 : 8, b_cols = 24 - b_rows;  // B[k][n] or Bt[n][k]
  for (int e = lane; e < 256; e += 32) a_tile[(e / 16) * kStride + e % 16] = A[e];
  for (int e = lane; e < 128; e += 32) b_tile[(e / b_cols) * kStride + e % b_cols] = B[e];
  __syncwarp();
  uint32_t a[4], b[2];
  const int a_row = kFeed == Feed::kWrongALanes ? lane % 8 + 8 * (lane / 16) : lane % 16;
  const int a_col = kFeed == Feed::kWrongALanes ? 8 * ((lane / 8) % 2) : 8 * (lane / 16);
  ldmatrix<4>(a, a_tile + a_row * kStride + a_col);
  if (kFeed == Feed::kBRowsTrans) {
    ldmatrix<2, true>(b, b_tile + (lane % 16) * kStride);  // lanes 0-15: rows k = 0..15
  } else {
    ldmatrix<2>(b, b_tile + (lane % 8) * kStride + 8 * ((lane / 8) % 2));  // lanes 8-15: columns k = 8..15
  }
  const float zero[4] = {0, 0, 0, 0};
  float d[4];
  mma_m16n8k16<T>(d, a, b, zero);
  D[g * 8 + 2 * tig] = d[0];
  D[g * 8 + 2 * tig + 1] = d[1];
  D[(g + 8) * 8 + 2 * tig] = d[2];
  D[(g + 8) * 8 + 2 * tig + 1] = d[3];
}

// Four int8 values as one register, p[0] in the lowest byte.
__device__ inline uint32_t pack4(const int8_t* p) {
  return uint32_t(uint8_t(p[0])) | (uint32_t(uint8_t(p[1])) << 8) | (uint32_t(uint8_t(p[2])) << 16) |
         (uint32_t(uint8_t(p[3])) << 24);
}

// D (16x8 s32) = A (16x32 int8, row-major) * B + C, B given as Bt[n][k] (8 x 32), each lane
// packing its registers from global memory by the m16n8k32 .s8 fragment tables.
template <Variant kVariant>
__global__ void mma_s8_kernel(const int8_t* A, const int8_t* Bt, const int32_t* C, int32_t* D) {
  const int lane = threadIdx.x, g = lane / 4, tig = lane % 4;
  uint32_t a[4] = {pack4(A + g * 32 + 4 * tig), pack4(A + (g + 8) * 32 + 4 * tig), pack4(A + g * 32 + 4 * tig + 16),
                   pack4(A + (g + 8) * 32 + 4 * tig + 16)};
  if (kVariant == Variant::kWrongA) {
    const uint32_t t = a[1];
    a[1] = a[2];
    a[2] = t;
  }
  const uint32_t b[2] = {pack4(Bt + g * 32 + 4 * tig), pack4(Bt + g * 32 + 4 * tig + 16)};
  const int32_t c[4] = {C[g * 8 + 2 * tig], C[g * 8 + 2 * tig + 1], C[(g + 8) * 8 + 2 * tig],
                        C[(g + 8) * 8 + 2 * tig + 1]};
  int32_t d[4];
  mma_m16n8k32_s8(d, a, b, c);
  if (kVariant == Variant::kWrongAccumulator) {
    D[g * 8 + tig] = d[0];
    D[g * 8 + tig + 4] = d[1];
    D[(g + 8) * 8 + tig] = d[2];
    D[(g + 8) * 8 + tig + 4] = d[3];
  } else {
    D[g * 8 + 2 * tig] = d[0];
    D[g * 8 + 2 * tig + 1] = d[1];
    D[(g + 8) * 8 + 2 * tig] = d[2];
    D[(g + 8) * 8 + 2 * tig + 1] = d[3];
  }
}

// The int8 MaxSim forward's feed: A (16x32 int8) by ldmatrix.x4 with lane l giving row l % 16 at
// byte 16 (l / 16), Bt[n][k] (8x32) by ldmatrix.x2 with lanes 8-15 giving byte 16: the b16 rows
// ldmatrix reads are 16 bytes, so its registers are the s8 fragments' (4 consecutive bytes each).
__global__ void ldmatrix_mma_s8_kernel(const int8_t* A, const int8_t* Bt, int32_t* D) {
  constexpr int kStride = 48;  // bytes: three 16-byte units
  alignas(16) __shared__ int8_t a_tile[16 * kStride];
  alignas(16) __shared__ int8_t b_tile[8 * kStride];
  const int lane = threadIdx.x, g = lane / 4, tig = lane % 4;
  for (int e = lane; e < 512; e += 32) a_tile[(e / 32) * kStride + e % 32] = A[e];
  for (int e = lane; e < 256; e += 32) b_tile[(e / 32) * kStride + e % 32] = Bt[e];
  __syncwarp();
  uint32_t a[4], b[2];
  ldmatrix<4>(a, a_tile + (lane % 16) * kStride + 16 * (lane / 16));
  ldmatrix<2>(b, b_tile + (lane % 8) * kStride + 16 * ((lane / 8) % 2));
  const int32_t zero[4] = {0, 0, 0, 0};
  int32_t d[4];
  mma_m16n8k32_s8(d, a, b, zero);
  D[g * 8 + 2 * tig] = d[0];
  D[g * 8 + 2 * tig + 1] = d[1];
  D[(g + 8) * 8 + 2 * tig] = d[2];
  D[(g + 8) * 8 + 2 * tig + 1] = d[3];
}

// Only half of the warp reaches the mma: a misuse (.sync.aligned needs all 32 lanes).
__global__ void mma_half_warp(float* D) {
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  const float c[4] = {1, 1, 1, 1};
  float d[4] = {0, 0, 0, 0};
  if (threadIdx.x < 16) mma_m16n8k16<__half>(d, a, b, c);  // @half-warp-mma
  D[threadIdx.x] = d[0];
}

// A row address 8 bytes past a 16-byte boundary.
__global__ void ldmatrix_misaligned(uint32_t* out) {
  alignas(16) __shared__ uint16_t smem[8 * 16 + 8];
  for (int e = threadIdx.x; e < 8 * 16 + 8; e += 32) smem[e] = static_cast<uint16_t>(e);
  __syncwarp();
  uint32_t r[1];
  ldmatrix<1>(r, smem + (threadIdx.x % 8) * 16 + 4);  // @misaligned-ldmatrix
  out[threadIdx.x] = r[0];
}

// d[i] = max.NaN.f32(a[i], b[i]), each thread taking every 32nd pair.
__global__ void max_nan_kernel(const float* a, const float* b, float* d, int n) {
  for (int i = threadIdx.x; i < n; i += 32) d[i] = max_nan(a[i], b[i]);
}

#if !defined(KDOPS_SIM)  // nvcc: instantiate the templates so that their code (and its PTX) is compiled
template __global__ void ldmatrix_kernel<1, false>(const uint16_t*, const int*, const int*, uint32_t*);
template __global__ void ldmatrix_kernel<2, false>(const uint16_t*, const int*, const int*, uint32_t*);
template __global__ void ldmatrix_kernel<4, false>(const uint16_t*, const int*, const int*, uint32_t*);
template __global__ void ldmatrix_kernel<1, true>(const uint16_t*, const int*, const int*, uint32_t*);
template __global__ void ldmatrix_kernel<2, true>(const uint16_t*, const int*, const int*, uint32_t*);
template __global__ void ldmatrix_kernel<4, true>(const uint16_t*, const int*, const int*, uint32_t*);
template __global__ void mma_kernel<__half, Variant::kDocumented>(const uint16_t*, const uint16_t*, const float*, float*);
template __global__ void mma_kernel<__nv_bfloat16, Variant::kDocumented>(const uint16_t*, const uint16_t*, const float*,
                                                                         float*);
template __global__ void ldmatrix_mma_kernel<__half, Feed::kBtRows>(const uint16_t*, const uint16_t*, float*);
template __global__ void ldmatrix_mma_kernel<__nv_bfloat16, Feed::kBRowsTrans>(const uint16_t*, const uint16_t*, float*);
template __global__ void mma_s8_kernel<Variant::kDocumented>(const int8_t*, const int8_t*, const int32_t*, int32_t*);
#endif
}  // namespace sim_mma_ptx

// ---------------------------------------------------------------- cases
#if defined(KDOPS_SIM)
namespace {

using kdops::sim::launch;
using namespace sim_mma_ptx;

uint64_t rng_state = 0x9e3779b97f4a7c15ull;
uint32_t next_random() {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<uint32_t>(rng_state >> 32);
}

// Random T values in (-4, 4) with full mantissas: their fp32 sums round, so the sum order shows.
template <typename T>
std::vector<uint16_t> random_16bit(int n) {
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = T(std::ldexp(static_cast<float>(next_random() % (1u << 24)), -21) - 4.0f).__x;
  return v;
}

template <typename T>
float widen(uint16_t bits) {
  return static_cast<float>(T::from_bits(bits));
}

void print_hex(const std::vector<uint32_t>& v) {
  for (uint32_t x : v) std::printf("%08x ", x);
  std::printf("\n");
}

std::vector<uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<uint32_t> bits(v.size());
  std::memcpy(bits.data(), v.data(), v.size() * 4);
  return bits;
}

void report(bool equal, const std::vector<uint32_t>& results) {
  std::printf(equal ? "ok\n" : "differs\n");
  print_hex(results);
}

// Every lane passes a random row of the tile and a random half (column 0 or 8); each register
// must hold what the PTX ISA's table says that lane gets from those rows.
template <int kNum, bool kTrans>
void case_ldmatrix() {
  const std::vector<uint16_t> tile = random_16bit<__half>(kTileRows * kTileCols);
  std::vector<int> row_of(32), col_of(32);
  for (int l = 0; l < 32; ++l) {
    row_of[l] = static_cast<int>(next_random() % kTileRows);
    col_of[l] = 8 * static_cast<int>(next_random() % 2);
  }
  std::vector<uint32_t> out(128, 0);
  launch(ldmatrix_kernel<kNum, kTrans>, dim3(1), dim3(32), 0, nullptr, tile.data(), row_of.data(), col_of.data(),
         out.data());
  bool equal = true;
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, tig = lane % 4;
    for (int i = 0; i < kNum; ++i) {
      uint32_t expected = 0;
      for (int h = 0; h < 2; ++h) {
        // Element (row, col) of matrix i is column col of the row that lane 8i + row addressed.
        const int row = kTrans ? 2 * tig + h : g, col = kTrans ? g : 2 * tig + h;
        const int source = 8 * i + row;
        expected |= uint32_t(tile[row_of[source] * kTileCols + col_of[source] + col]) << (16 * h);
      }
      equal = equal && out[4 * lane + i] == expected;
    }
  }
  report(equal, out);
}

// D = A * B + C in fp32, k ascending, each sum rounded (what the simulator assumes); A[16][16],
// Bt[8][16] (B transposed), C and D [16][8].
template <typename T>
std::vector<float> reference_mma(const std::vector<uint16_t>& A, const std::vector<uint16_t>& Bt,
                                 const std::vector<float>& C) {
  std::vector<float> D(128);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      float acc = C[i * 8 + j];
      double exact = C[i * 8 + j];
      for (int k = 0; k < 16; ++k) {
        const float p = widen<T>(A[i * 16 + k]) * widen<T>(Bt[j * 16 + k]);
        if (static_cast<double>(p) != static_cast<double>(widen<T>(A[i * 16 + k])) * widen<T>(Bt[j * 16 + k])) {
          std::printf("MISMATCH: a 16-bit product is not exact in fp32\n");
          std::exit(4);
        }
        acc += p;
        exact += p;
      }
      if (std::fabs(acc - exact) > 1e-5 * (1 + std::fabs(exact))) {
        std::printf("MISMATCH: the fp32 reference strays from the exact sum\n");
        std::exit(4);
      }
      D[i * 8 + j] = acc;
    }
  }
  return D;
}

std::vector<float> random_floats(int n) {
  std::vector<float> v(n);
  for (float& x : v) x = std::ldexp(static_cast<float>(next_random() % (1u << 24)), -20) - 8.0f;
  return v;
}

template <typename T, Variant kVariant>
void case_mma() {
  const std::vector<uint16_t> A = random_16bit<T>(256), Bt = random_16bit<T>(128);
  const std::vector<float> C = random_floats(128);
  std::vector<float> D(128, 0.0f);
  launch(mma_kernel<T, kVariant>, dim3(1), dim3(32), 0, nullptr, A.data(), Bt.data(), C.data(), D.data());
  report(bits_of(D) == bits_of(reference_mma<T>(A, Bt, C)), bits_of(D));
}

template <typename T, Feed kFeed>
void case_ldmatrix_mma() {
  const std::vector<uint16_t> A = random_16bit<T>(256), Bt = random_16bit<T>(128);
  std::vector<uint16_t> B(128);  // B[k][n], for the .trans feed
  for (int k = 0; k < 16; ++k) {
    for (int n = 0; n < 8; ++n) B[k * 8 + n] = Bt[n * 16 + k];
  }
  std::vector<float> D(128, 0.0f);
  launch(ldmatrix_mma_kernel<T, kFeed>, dim3(1), dim3(32), 0, nullptr, A.data(),
         kFeed == Feed::kBRowsTrans ? B.data() : Bt.data(), D.data());
  report(bits_of(D) == bits_of(reference_mma<T>(A, Bt, std::vector<float>(128, 0.0f))), bits_of(D));
}

// D = A * B + C exactly (int64, then checked to fit int32): A[16][32], Bt[8][32], C and D [16][8].
std::vector<int32_t> reference_mma_s8(const std::vector<int8_t>& A, const std::vector<int8_t>& Bt,
                                      const std::vector<int32_t>& C) {
  std::vector<int32_t> D(128);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      int64_t acc = C[i * 8 + j];
      for (int k = 0; k < 32; ++k) acc += int64_t(A[i * 32 + k]) * Bt[j * 32 + k];
      if (acc != static_cast<int32_t>(acc)) {
        std::printf("MISMATCH: the test's sums must fit int32\n");
        std::exit(4);
      }
      D[i * 8 + j] = static_cast<int32_t>(acc);
    }
  }
  return D;
}

// Every int8 value, -128 and 127 included.
std::vector<int8_t> random_s8(int n) {
  std::vector<int8_t> v(n);
  for (int8_t& x : v) x = static_cast<int8_t>(next_random() >> 24);
  return v;
}

std::vector<uint32_t> bits_of(const std::vector<int32_t>& v) { return std::vector<uint32_t>(v.begin(), v.end()); }

template <Variant kVariant>
void case_mma_s8() {
  const std::vector<int8_t> A = random_s8(512), Bt = random_s8(256);
  std::vector<int32_t> C(128);
  for (int32_t& x : C) x = static_cast<int32_t>(next_random() % (1u << 24)) - (1 << 23);
  std::vector<int32_t> D(128, 0);
  launch(mma_s8_kernel<kVariant>, dim3(1), dim3(32), 0, nullptr, A.data(), Bt.data(), C.data(), D.data());
  report(D == reference_mma_s8(A, Bt, C), bits_of(D));
}

void case_ldmatrix_mma_s8() {
  const std::vector<int8_t> A = random_s8(512), Bt = random_s8(256);
  std::vector<int32_t> D(128, 0);
  launch(ldmatrix_mma_s8_kernel, dim3(1), dim3(32), 0, nullptr, A.data(), Bt.data(), D.data());
  report(D == reference_mma_s8(A, Bt, std::vector<int32_t>(128, 0)), bits_of(D));
}

// max.NaN.f32 on every pair of special values (NaNs of either sign and other payloads, infinities,
// zeros of both signs, a subnormal, the largest float, ordinary numbers) and random pairs, bit for
// bit against the PTX ISA's rule: any NaN in gives the canonical NaN 0x7fffffff, otherwise the
// larger input, and of two zeros -0 only when both are -0.
float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint32_t reference_max_nan(float a, float b) {
  uint32_t out;
  if (std::isnan(a) || std::isnan(b)) return 0x7fffffffu;
  const float larger = a == 0.0f && b == 0.0f ? (std::signbit(a) && std::signbit(b) ? -0.0f : 0.0f) : (b > a ? b : a);
  std::memcpy(&out, &larger, 4);
  return out;
}

void case_max_nan() {
  const std::vector<uint32_t> special = {0x7fc00000u, 0xffc00000u, 0x7fa00001u, 0x7f800000u, 0xff800000u, 0x00000000u,
                                         0x80000000u, 0x00000001u, 0x7f7fffffu, 0x3fc00000u, 0xc0100000u, 0x3fc00001u};
  std::vector<float> a, b;
  for (uint32_t x : special) {
    for (uint32_t y : special) {
      a.push_back(from_bits(x));
      b.push_back(from_bits(y));
    }
  }
  const std::vector<float> r = random_floats(64);
  for (int i = 0; i < 32; ++i) {
    a.push_back(r[i]);
    b.push_back(r[32 + i]);
  }
  std::vector<float> d(a.size());
  launch(max_nan_kernel, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), d.data(), static_cast<int>(a.size()));
  const std::vector<uint32_t> bits = bits_of(d);
  bool equal = true;
  for (size_t i = 0; i < a.size(); ++i) equal = equal && bits[i] == reference_max_nan(a[i], b[i]);
  report(equal, bits);
}

}  // namespace

int main(int argc, char** argv) {
  if (!set_schedule_from_args(argc, argv)) return 2;
  const std::string name = argv[1];
  const std::map<std::string, std::function<void()>> cases = {
      {"ldmatrix_x1", case_ldmatrix<1, false>},
      {"ldmatrix_x2", case_ldmatrix<2, false>},
      {"ldmatrix_x4", case_ldmatrix<4, false>},
      {"ldmatrix_x1_trans", case_ldmatrix<1, true>},
      {"ldmatrix_x2_trans", case_ldmatrix<2, true>},
      {"ldmatrix_x4_trans", case_ldmatrix<4, true>},
      {"mma_f16", case_mma<__half, Variant::kDocumented>},
      {"mma_bf16", case_mma<__nv_bfloat16, Variant::kDocumented>},
      {"ldmatrix_mma_f16", case_ldmatrix_mma<__half, Feed::kBtRows>},
      {"ldmatrix_mma_bf16", case_ldmatrix_mma<__nv_bfloat16, Feed::kBtRows>},
      {"ldmatrix_trans_mma_f16", case_ldmatrix_mma<__half, Feed::kBRowsTrans>},
      {"ldmatrix_trans_mma_bf16", case_ldmatrix_mma<__nv_bfloat16, Feed::kBRowsTrans>},
      {"mma_s8", case_mma_s8<Variant::kDocumented>},
      {"ldmatrix_mma_s8", case_ldmatrix_mma_s8},
      {"mma_s8_wrong_accumulator_layout", case_mma_s8<Variant::kWrongAccumulator>},
      {"mma_s8_wrong_a_layout", case_mma_s8<Variant::kWrongA>},
      {"mma_wrong_accumulator_layout", case_mma<__half, Variant::kWrongAccumulator>},
      {"mma_wrong_a_layout", case_mma<__nv_bfloat16, Variant::kWrongA>},
      {"ldmatrix_wrong_lane_order", case_ldmatrix_mma<__half, Feed::kWrongALanes>},
      {"max_nan", case_max_nan},
      {"mma_half_warp", [] {
         std::vector<float> D(32);
         launch(mma_half_warp, dim3(1), dim3(32), 0, nullptr, D.data());
       }},
      {"ldmatrix_misaligned", [] {
         std::vector<uint32_t> out(32);
         launch(ldmatrix_misaligned, dim3(1), dim3(32), 0, nullptr, out.data());
       }},
  };
  return run_case(cases, name);
}
#endif
