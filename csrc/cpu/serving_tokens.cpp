// Decoders of the serving MaxSim ops' token rows (serving_tokens.h).
#include "cpu/serving_tokens.h"

#include <c10/util/Exception.h>
#include <c10/util/Float8_e4m3fn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

namespace kdops::cpu {

const float* e4m3_to_float_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int bits = 0; bits < 256; ++bits)
      t[bits] = static_cast<float>(c10::Float8_e4m3fn(static_cast<uint8_t>(bits), c10::Float8_e4m3fn::from_bits()));
    return t;
  }();
  return table.data();
}

void TokenRows::decode(int64_t row, int64_t n, float* out) const {
  const int64_t count = n * dim;
  switch (type) {
    case at::kFloat:
      std::memcpy(out, static_cast<const float*>(data) + row * dim, count * sizeof(float));
      return;
    case at::kChar: {
      const int8_t* x = static_cast<const int8_t*>(data) + row * dim;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t e = 0; e < dim; ++e) out[t * dim + e] = static_cast<float>(x[t * dim + e]) * scale[row + t];
      return;
    }
    case at::kFloat8_e4m3fn: {
      const uint8_t* x = static_cast<const uint8_t*>(data) + row * dim;
      const float* table = e4m3_to_float_table();
      for (int64_t t = 0; t < n; ++t)
        for (int64_t e = 0; e < dim; ++e) out[t * dim + e] = table[x[t * dim + e]] * scale[row + t];
      return;
    }
    default:
      TORCH_CHECK(false, "TokenRows: no decoder for ", type);
  }
}

ResidualRows::ResidualRows(const int32_t* codes, const uint8_t* residuals, const float* centroids,
                           const float* bucket_weights, int64_t dim, int nbits)
    : codes(codes), residuals(residuals), centroids(centroids), dim(dim), nbits(nbits) {
  const int per_byte = 8 / nbits;
  weight_of_byte.resize(256 * per_byte);
  for (int byte = 0; byte < 256; ++byte) {
    for (int p = 0; p < per_byte; ++p) {
      int bucket = 0;
      for (int k = 0; k < nbits; ++k) bucket |= ((byte >> (7 - p * nbits - k)) & 1) << k;
      weight_of_byte[byte * per_byte + p] = bucket_weights[bucket];
    }
  }
}

void ResidualRows::decode(int64_t row, int64_t n, float* out) const {
  const int per_byte = 8 / nbits;
  const int64_t bytes = dim * nbits / 8;
  for (int64_t t = 0; t < n; ++t) {
    const float* centroid = centroids + int64_t(codes[row + t]) * dim;
    const uint8_t* packed = residuals + (row + t) * bytes;
    float* x = out + t * dim;
    for (int64_t b = 0; b < bytes; ++b) {
      const float* w = weight_of_byte.data() + packed[b] * per_byte;
      for (int p = 0; p < per_byte; ++p) x[b * per_byte + p] = centroid[b * per_byte + p] + w[p];
    }
    // torch.nn.functional.normalize(x, p=2, dim=-1): x / max(||x||, 1e-12).
    float squares = 0;
    for (int64_t e = 0; e < dim; ++e) squares += x[e] * x[e];
    const float norm = std::max(std::sqrt(squares), 1e-12f);
    for (int64_t e = 0; e < dim; ++e) x[e] /= norm;
  }
}

}  // namespace kdops::cpu
