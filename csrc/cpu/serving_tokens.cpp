// Decoders of the serving MaxSim ops' token rows (serving_tokens.h).
#include "cpu/serving_tokens.h"

#include <c10/util/Exception.h>
#include <c10/util/Float8_e4m3fn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "cpu/cpu_clones.h"

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

namespace {

// One token: x = centroid + the weights of its packed buckets (8 / nbits per byte), then
// x / max(||x||, 1e-12). The squares are summed in 16 interleaved partial sums (a fixed order,
// which the compiler can keep in one vector register; a single running sum would chain every
// add on the last one's latency, the bulk of the decoding time).
template <int kPerByte>
KDOPS_CPU_CLONES void decode_residual(const float* centroid, const uint8_t* packed, const float* weight_of_byte,
                                      int64_t dim, float* x) {
  for (int64_t b = 0; b < dim / kPerByte; ++b) {
    const float* w = weight_of_byte + packed[b] * kPerByte;
    for (int p = 0; p < kPerByte; ++p) x[b * kPerByte + p] = centroid[b * kPerByte + p] + w[p];
  }
  constexpr int kPartial = 16;
  float partial[kPartial] = {};
  for (int64_t e = 0; e < dim; ++e) partial[e % kPartial] += x[e] * x[e];
  float squares = 0;
  for (float s : partial) squares += s;
  const float norm = std::max(std::sqrt(squares), 1e-12f);  // torch.nn.functional.normalize's eps
  for (int64_t e = 0; e < dim; ++e) x[e] /= norm;
}

}  // namespace

void ResidualRows::decode(int64_t row, int64_t n, float* out) const {
  const int64_t bytes = dim * nbits / 8;
  for (int64_t t = 0; t < n; ++t) {
    const float* centroid = centroids + int64_t(codes[row + t]) * dim;
    const uint8_t* packed = residuals + (row + t) * bytes;
    float* x = out + t * dim;
    if (nbits == 1) decode_residual<8>(centroid, packed, weight_of_byte.data(), dim, x);
    if (nbits == 2) decode_residual<4>(centroid, packed, weight_of_byte.data(), dim, x);
    if (nbits == 4) decode_residual<2>(centroid, packed, weight_of_byte.data(), dim, x);
  }
}

}  // namespace kdops::cpu
