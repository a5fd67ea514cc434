// The two policies of the serving MaxSim item loop (maxsim_serving_driver.h).
//   DecodedPolicy: query and doc rows decoded to float32 (serving_tokens.h), a block at a time,
//     then the float MaxSim panel kernel (maxsim_panel.h), the one kdops.maxsim runs: the scores
//     are those of kdops.maxsim on the decoded tensors, bit for bit.
//   Int8Policy: int8 queries and docs, exact int32 dot products (maxsim_int8_panel.h); a query
//     token's max over j of float(<q_i, d_j>) * d_scale[j] is multiplied by its q_scale[i].
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/maxsim_int8_panel.h"
#include "cpu/maxsim_panel.h"
#include "cpu/serving_tokens.h"

namespace kdops::cpu {

template <typename DocRows>
class DecodedPolicy {
 public:
  DecodedPolicy(const TokenRows& query, int64_t Lq, const DocRows& docs, CpuIsa isa)
      : kernel_(maxsim_panel_kernel<float>(isa)), query_(query), docs_(docs), Lq_(Lq), dim_(query.dim) {}

  // Float32 reranking (1.2e9 multiply-adds) took 46 ms on this project's 2-core AVX-512 VM.
  static constexpr double kMacNs = 0.04;

  int64_t rows() const { return kernel_.rows; }

  void pack(int64_t q0, int64_t q1) {
    const int64_t R = (q1 - q0) * Lq_, rows = kernel_.rows;
    panels_ = (R + rows - 1) / rows;
    decoded_.resize(R * dim_);
    query_.decode(q0 * Lq_, R, decoded_.data());
    packed_.assign(panels_ * dim_ * rows, 0.0f);
    for (int64_t r = 0; r < R; ++r) {
      float* panel = packed_.data() + (r / rows) * dim_ * rows + r % rows;
      for (int64_t e = 0; e < dim_; ++e) panel[e * rows] = decoded_[r * dim_ + e];
    }
  }

  // The kernel prefetches the codes of the next block (the rows after these: usually the next
  // fold's) as it folds this one, so the next decode finds them in cache.
  void fold(int64_t row, int64_t n, const bool* valid, int32_t first, float* best, int32_t* arg) {
    decoded_.resize(n * dim_);
    docs_.decode(row, n, decoded_.data());
    for (int64_t p = 0; p < panels_; ++p)
      kernel_.fn(packed_.data() + p * dim_ * kernel_.rows, decoded_.data(), n, dim_, valid, first,
                 best + p * kernel_.rows, arg + p * kernel_.rows, docs_.code_rows(row + n));
  }

  float contribution(int64_t, int64_t, float max) const { return max; }

 private:
  MaxSimPanelKernel<float> kernel_;
  TokenRows query_;
  const DocRows& docs_;
  int64_t Lq_, dim_, panels_ = 0;
  std::vector<float> packed_, decoded_;
};

class Int8Policy {
 public:
  Int8Policy(const int8_t* Q, const float* q_scale, int64_t Lq, int64_t dim, const int8_t* D,
             const float* d_scale, CpuIsa isa)
      : kernel_(maxsim_int8_panel_kernel(isa)), Q_(Q), q_scale_(q_scale), D_(D), d_scale_(d_scale),
        Lq_(Lq), dim_(dim) {}

  // int8 reranking (1.2e9 multiply-adds) took 6.6-8 ms on the same VM (VNNI).
  static constexpr double kMacNs = 0.006;

  int64_t rows() const { return kInt8PanelRows; }

  // Row r of the item at panel r / 32, lane r % 32 (int8_pack_panel).
  void pack(int64_t q0, int64_t q1) {
    const int64_t R = (q1 - q0) * Lq_, rows = kInt8PanelRows, panel_bytes = int8_panel_bytes(dim_);
    panels_ = (R + rows - 1) / rows;
    packed_.resize(panels_ * panel_bytes);
    start_.resize(panels_ * rows);
    for (int64_t p = 0; p < panels_; ++p)
      int8_pack_panel(Q_ + (q0 * Lq_ + p * rows) * dim_, std::min(rows, R - p * rows), dim_,
                      packed_.data() + p * panel_bytes, start_.data() + p * rows);
  }

  void fold(int64_t row, int64_t n, const bool* valid, int32_t first, float* best, int32_t* arg) {
    const int64_t panel_bytes = int8_panel_bytes(dim_);
    for (int64_t p = 0; p < panels_; ++p)
      kernel_.fn(packed_.data() + p * panel_bytes, start_.data() + p * kInt8PanelRows, D_ + row * dim_, n,
                 dim_, d_scale_ + row, valid, first, best + p * kInt8PanelRows, arg + p * kInt8PanelRows);
  }

  float contribution(int64_t q, int64_t i, float max) const { return max * q_scale_[q * Lq_ + i]; }

 private:
  MaxSimInt8PanelKernel kernel_;
  const int8_t* Q_;
  const float* q_scale_;
  const int8_t* D_;
  const float* d_scale_;
  int64_t Lq_, dim_, panels_ = 0;
  std::vector<int8_t> packed_;
  std::vector<int32_t> start_;
};

}  // namespace kdops::cpu
