// Token rows of the serving MaxSim ops decoded to float32, a block of rows at a time, into a
// buffer the float panel kernel (maxsim_panel.h) reads while it is in cache: the docs are never
// decoded whole.
//   TokenRows:    float32 rows as they are; int8 / float8_e4m3fn rows as x * scale[row]
//                 (both factors exact in float32, one rounding in the product)
//   ResidualRows: ColBERT/PLAID residual rows, normalize(centroids[code] + bucket_weights[b_e])
#pragma once

#include <ATen/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "cpu/cpu_isa.h"
#include "cpu/stream_prefetch.h"

namespace kdops::cpu {

// The smallest norm a residual token is divided by: torch.nn.functional.normalize's eps, as
// ColBERT's decompress uses it.
constexpr float kNormEps = 1e-12f;

struct TokenRows {
  const void* data;    // [rows, dim] of `type`
  at::ScalarType type;  // kFloat, kChar or kFloat8_e4m3fn
  const float* scale;  // [rows]; nullptr for float32 rows
  int64_t dim;
  CpuIsa isa;          // e4m3 rows: AVX-512's F16C conversion, or the cloned integer arithmetic

  // Rows [row, row + n) into out [n, dim].
  void decode(int64_t row, int64_t n, float* out) const;
  // The codes of rows row, row + 1, ..., for the kernel to prefetch (stream_prefetch.h).
  PrefetchRows code_rows(int64_t row) const {
    const int64_t row_bytes = dim * static_cast<int64_t>(c10::elementSize(type));
    return {static_cast<const char*>(data) + row * row_bytes, row_bytes};
  }
};

// A ColBERT/PLAID residual-compressed token (colbert/indexing/codecs/residual.py's format): the
// id of its centroid, and per dimension e an nbits bucket index b_e, packed with numpy's
// packbits order: the bits of dimension e are stream bits e * nbits + k (k = 0 the bucket's
// least significant bit), and each byte holds 8 stream bits, the first in its most significant
// bit. Decoded as ColBERT's decompress does: x = centroids[code] + bucket_weights[b], then
// x / max(||x||, kNormEps).
struct ResidualRows {
  const int32_t* codes;      // [rows]
  const uint8_t* residuals;  // [rows, dim * nbits / 8]
  const float* centroids;    // [C, dim]
  int64_t dim;
  int nbits;
  CpuIsa isa;  // AVX-512's table lookups (decode_residual_avx512), or the cloned loops
  // weight_of_byte[byte * (8 / nbits) + p]: the bucket weight of the p-th dimension a byte holds.
  std::vector<float> weight_of_byte;
  // weight_of_field[f]: the bucket weight of a dimension whose nbits, read as an integer in the
  // byte's bit order (its first stream bit most significant), are f; 16 entries, the first 2^nbits used.
  std::vector<float> weight_of_field;

  ResidualRows(const int32_t* codes, const uint8_t* residuals, const float* centroids,
               const float* bucket_weights, int64_t dim, int nbits, CpuIsa isa);
  void decode(int64_t row, int64_t n, float* out) const;
  // The residual codes of rows row, row + 1, ..., for the kernel to prefetch.
  PrefetchRows code_rows(int64_t row) const {
    const int64_t row_bytes = dim * nbits / 8;
    return {residuals + row * row_bytes, row_bytes};
  }
};

// float8_e4m3fn rows times their scales by AVX-512's half-to-float conversion
// (serving_tokens_avx512.cpp): the bits of TokenRows' generic decoder. Only called where the CPU
// has AVX-512 (cpu_isa()).
void decode_e4m3_avx512(const uint8_t* x, const float* scale, int64_t n, int64_t dim, float* out);

// ResidualRows::decode's rows [row, row + n) on AVX-512 (serving_tokens_avx512.cpp): the bits of
// the cloned loops' AVX-512 clone. Only called where the CPU has AVX-512.
void decode_residual_avx512(const ResidualRows& rows, int64_t row, int64_t n, float* out);

}  // namespace kdops::cpu
