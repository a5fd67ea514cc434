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

namespace kdops::cpu {

struct TokenRows {
  const void* data;    // [rows, dim] of `type`
  at::ScalarType type;  // kFloat, kChar or kFloat8_e4m3fn
  const float* scale;  // [rows]; nullptr for float32 rows
  int64_t dim;

  // Rows [row, row + n) into out [n, dim].
  void decode(int64_t row, int64_t n, float* out) const;
};

// A ColBERT/PLAID residual-compressed token (colbert/indexing/codecs/residual.py's format): the
// id of its centroid, and per dimension e an nbits bucket index b_e, packed with numpy's
// packbits order: the bits of dimension e are stream bits e * nbits + k (k = 0 the bucket's
// least significant bit), and each byte holds 8 stream bits, the first in its most significant
// bit. Decoded as ColBERT's decompress does: x = centroids[code] + bucket_weights[b], then
// x / max(||x||, 1e-12).
struct ResidualRows {
  const int32_t* codes;      // [rows]
  const uint8_t* residuals;  // [rows, dim * nbits / 8]
  const float* centroids;    // [C, dim]
  int64_t dim;
  int nbits;
  // weight_of_byte[byte * (8 / nbits) + p]: the bucket weight of the p-th dimension a byte holds.
  std::vector<float> weight_of_byte;

  ResidualRows(const int32_t* codes, const uint8_t* residuals, const float* centroids,
               const float* bucket_weights, int64_t dim, int nbits);
  void decode(int64_t row, int64_t n, float* out) const;
};

}  // namespace kdops::cpu
