// The ThreadSanitizer run of the simulated CUDA kernels: a standalone program (TSan inside
// CPython + torch is fragile) linking libtorch, csrc/kdops.cpp and csrc/cuda/*.{cu,cpp} compiled by g++
// for the simulator with -fsanitize=thread (`make sim-tsan`). It calls every torch.ops.kdops_sim
// op (forward and backward) through the dispatcher on small inputs whose shapes still cross tile
// and block boundaries, on every kernel and dtype path: float and double everywhere; MaxSim's
// tensor-core kernel in fp16, bf16 and TF32 beside its SIMT kernel, and its dQ and dD kernels;
// the list losses' warp-per-row (n <= 256) and block-per-row kernels; listwise KD's warp and
// block paths, with learned temperatures over several blocks (their grid sums); Margin-MSE over
// one block and over several (its grid sum). The simulator runs each
// CUDA thread as a TSan fiber and tells TSan about barriers and about what orders blocks (fences
// with atomics, runtime.cpp), so an access to shared or global memory by two threads with nothing
// between them that orders them is reported as a data race, within a block or between blocks;
// TSan's exit code fails the run. Each call is also made under the warp run-ahead schedule and
// must give the same bits.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Stack = std::vector<c10::IValue>;

// name: "namespace::op" or "namespace::op.overload".
Stack call(const std::string& name, Stack args) {
  const size_t dot = name.find('.');
  const std::string overload = dot == std::string::npos ? "" : name.substr(dot + 1);
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name.substr(0, dot).c_str(), overload.c_str());
  op.callBoxed(&args);
  return args;
}

bool same_bits(const Stack& a, const Stack& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const at::Tensor x = a[i].toTensor(), y = b[i].toTensor();
    if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type()) return false;
    if (x.numel() > 0 && std::memcmp(x.contiguous().data_ptr(), y.contiguous().data_ptr(), x.nbytes()) != 0) return false;
  }
  return true;
}

int failures = 0;

// Runs op in order and under a shuffled schedule; returns the in-order outputs.
Stack run(const std::string& op, const Stack& args) {
  kdops::sim::set_options(kdops::sim::Options{});
  const Stack ordered = call("kdops_sim::" + op, args);
  kdops::sim::Options shuffled;
  shuffled.seed = 12345;
  shuffled.threads = kdops::sim::Schedule::kRunAhead;
  shuffled.shuffle_blocks = true;
  kdops::sim::set_options(shuffled);
  const Stack again = call("kdops_sim::" + op, args);
  kdops::sim::set_options(kdops::sim::Options{});
  if (!same_bits(ordered, again)) {
    std::fprintf(stderr, "FAIL %s: different bits under a shuffled schedule\n", op.c_str());
    ++failures;
  }
  std::printf("ran %s\n", op.c_str());
  return ordered;
}

void margin_mse(const at::TensorOptions& f) {
  // 40 x 8 terms: one block, no grid sum; 700 x 8: three blocks of 2048 terms and the grid sum.
  for (const int64_t rows : {40, 700}) {
    const at::Tensor s = at::randn({rows, 9}, f), t = at::randn({rows, 9}, f);
    const at::Tensor mask = at::rand({rows, 9}, f) > 0.2;
    const Stack out = run("margin_mse", {s, t, mask, std::string("mean")});
    run("margin_mse_backward", {at::ones({}, f), s, t, mask, out[1], std::string("mean")});
  }
  const at::Tensor sp = at::randn({300}, f), sn = at::randn({300}, f), tp = at::randn({300}, f),
                   tn = at::randn({300}, f);
  run("margin_mse_pairwise", {sp, sn, tp, tn, std::string("none")});
  run("margin_mse_pairwise_backward", {at::randn({300}, f), sp, sn, tp, tn, std::string("none")});
}

void maxsim(const at::TensorOptions& f) {
  // Lq = 33 and Ld = 40: two query tiles and two doc tiles of 32 tokens.
  const at::Tensor Q = at::randn({2, 33, 8}, f), D = at::randn({3, 40, 8}, f);
  const at::Tensor q_mask = at::rand({2, 33}, f) > 0.2, d_mask = at::rand({3, 40}, f) > 0.2;
  // A stack holds every argument, defaults included: length_normalize, then with_argmax (the
  // inference path, which writes no argmax, once; the argmax for backward otherwise).
  run("maxsim", {Q, D, q_mask, d_mask, c10::IValue(), false, false});
  const Stack out = run("maxsim", {Q, D, q_mask, d_mask, c10::IValue(), false, true});
  run("maxsim_backward", {at::randn({2, 3}, f), out[1], Q, D, q_mask, c10::IValue(), false, true, true});
  const at::Tensor tokens = at::randn({50, 8}, f);
  const at::Tensor offsets = at::tensor(std::vector<int64_t>{0, 35, 35, 50});
  const Stack packed = run("maxsim", {Q, tokens, q_mask, c10::IValue(), offsets, true, true});
  run("maxsim_backward", {at::randn({2, 3}, f), packed[1], Q, tokens, q_mask, offsets, true, true, true});
}

// MaxSim's dD with a hot row: positive queries and doc token 5 all ones, every query token's
// argmax; 15 x 37 = 555 hits past the hot threshold of 256: the hit counts (integer atomics),
// the row group's entries in 3 parts summed apart, and the combine kernel.
void maxsim_hot_rows(const at::TensorOptions& f) {
  const at::Tensor Q = at::rand({15, 37, 8}, f) + 0.5, D = at::rand({2, 20, 8}, f) * 2 - 1;
  D.select(1, 5).fill_(1.0);
  const Stack out = run("maxsim", {Q, D, c10::IValue(), c10::IValue(), c10::IValue(), false, true});
  run("maxsim_backward", {at::randn({15, 2}, f), out[1], Q, D, c10::IValue(), c10::IValue(), false, true, true});
}

// MaxSim's tensor-core kernel (fp16, bf16 stored; fp32 with TF32 allowed): Lq = 70 and Ld = 75,
// two strips of 64 query rows and two doc tiles of 64, d = 24 (a partial k-step); then its dQ
// and dD from the saved argmax.
void maxsim_tensor_core(const at::TensorOptions& f) {
  const at::Tensor Q = at::randn({2, 70, 24}, f), D = at::randn({3, 75, 24}, f);
  const at::Tensor q_mask = at::rand({2, 70}) > 0.1, d_mask = at::rand({3, 75}) > 0.2;
  const Stack out = run("maxsim", {Q, D, q_mask, d_mask, c10::IValue(), false, true});
  run("maxsim_backward",
      {at::randn({2, 3}, f.dtype(at::kFloat)), out[1], Q, D, q_mask, c10::IValue(), false, true, true});
}

void plackett_luce(const at::TensorOptions& f, int64_t n) {
  // n = 300: the block-per-row kernels, two tiles of the 256-thread scans; n = 40: a warp per row
  // (two keys a lane), 3 rows in one block. Row lengths n, 7 and 0.
  const at::Tensor scores = at::randn({3, n}, f), weights = at::rand({3, n}, f);
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{n, 7, 0});
  const at::Tensor valid_ranking = at::cat({at::randperm(n).unsqueeze(0),
                                            at::cat({at::randperm(7), at::arange(7, n)}).unsqueeze(0),
                                            at::arange(n).unsqueeze(0)});
  run("plackett_luce_loss", {scores, valid_ranking, weights, lengths, std::min<int64_t>(100, n - 3), std::string("sum")});
  run("plackett_luce_loss_backward",
      {at::ones({}, f), scores, valid_ranking, weights, lengths, std::min<int64_t>(100, n - 3), std::string("sum"), true});
  const at::Tensor relevance = at::randint(0, 4, {3, n}, f);
  const Stack listmle = run("listmle", {scores, relevance, lengths, c10::IValue(), std::string("mean")});
  run("plackett_luce_loss_backward",
      {at::ones({}, f), scores, listmle[1], c10::IValue(), lengths, c10::IValue(), std::string("mean"), false});
  const at::Tensor teacher = at::randn({3, n}, f);
  const at::Tensor target = at::tensor(std::vector<int64_t>{0, n - 1, 17});
  const Stack pld = run("pld_loss", {scores, teacher, target, 2.0, std::string("none")});
  run("pld_loss_backward", {at::rand({3}, f), scores, teacher, pld[1], 2.0, std::string("none"), true});
  run("listwise_kd_loss", {scores, teacher, lengths, 1.5, 0.7, std::string("mean")});
  run("listwise_kd_loss_backward",
      {at::ones({}, f), scores, teacher, lengths, 1.5, 0.7, std::string("mean"), true});
  // 20 rows (n = 40: 3 blocks of warp rows) with learned temperatures: read in device memory,
  // their gradients and the losses summed over the grid by the last block.
  const at::Tensor many = at::randn({20, n}, f), many_teacher = at::randn({20, n}, f);
  const at::Tensor ts = at::full({}, 1.5, f), tt = at::full({}, 0.7, f.dtype(at::kDouble));
  run("listwise_kd_loss_and_grads.tensor_temperature",
      {many, many_teacher, c10::IValue(), ts, tt, std::string("mean"), true});
  run("pld_loss_and_grads.tensor_temperature",
      {many, many_teacher, at::zeros({20}, at::kLong), tt, std::string("sum"), false});
}

}  // namespace

int main() {
  at::set_num_threads(1);  // the only concurrency under test is the simulated CUDA threads'
  at::manual_seed(0);
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const auto f = at::TensorOptions().dtype(dtype);
    margin_mse(f);
    maxsim(f);
    maxsim_hot_rows(f);
    plackett_luce(f, 300);
    plackett_luce(f, 40);
  }
  for (const auto dtype : {at::kHalf, at::kBFloat16}) maxsim_tensor_core(at::TensorOptions().dtype(dtype));
  at::globalContext().setAllowTF32CuBLAS(true);
  maxsim_tensor_core(at::TensorOptions().dtype(at::kFloat));
  at::globalContext().setAllowTF32CuBLAS(false);
  if (failures > 0) {
    std::fprintf(stderr, "%d op(s) changed under a shuffled schedule\n", failures);
    return 1;
  }
  std::printf("all kdops_sim ops ran\n");
  return 0;
}
