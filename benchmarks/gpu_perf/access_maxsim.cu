// The MaxSim forward kernels on the simulator with the access recorder (csrc/sim/access_record.h):
// built and run by benchmarks/gpu_perf/accesses.py, which turns the report into wavefronts and
// sectors per warp access for the performance model.
//
//   access_maxsim <fp16|bf16|tf32> <Nq> <Nd> <Lq> <Ld> <d>
//
// All pairs (in-batch layout), no masks, scores only (no argmax): the forward the model predicts.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/maxsim_kernels.cu"

namespace {

template <typename T>
T* device_buffer(int64_t n, float scale) {
  T* p = static_cast<T*>(kdops::sim::guarded_allocate(n * sizeof(T)));
  for (int64_t i = 0; i < n; ++i) p[i] = T(scale * static_cast<float>((i * 7919) % 97 - 48));
  return p;
}

template <typename scalar_t>
void forward(int64_t Nq, int64_t Nd, int64_t Lq, int64_t Ld, int64_t dim) {
  using namespace kdops::cuda;
  scalar_t* Q = device_buffer<scalar_t>(Nq * Lq * dim, 1.0f / 64);
  scalar_t* D = device_buffer<scalar_t>(Nd * Ld * dim, 1.0f / 64);
  float* scores = device_buffer<float>(Nq * Nd, 0.0f);
  const kdops::MaxSimLayout layout{nullptr, Ld, Nd, Nd, false, Nd * Ld};
  const kdops::MaxSimView<scalar_t> view{Q, D, nullptr, nullptr, Nq, Lq, dim, layout};
  // The chunk sums of a long query split over blocks (none at the model's small shape, where the
  // items fill the 132 SMs' worth of blocks the launcher is told of).
  const int64_t partials = maxsim::tensor_core_partials<scalar_t, false>(view, 132);
  float* partial = partials > 0 ? device_buffer<float>(partials, 0.0f) : nullptr;
  maxsim::tensor_core_forward<scalar_t, false>(view, scores, nullptr, partial, LaunchTarget{nullptr, 132});
  std::printf("score[0] %g\n", static_cast<double>(scores[0]));
  for (void* p : {static_cast<void*>(Q), static_cast<void*>(D), static_cast<void*>(scores), static_cast<void*>(partial)}) {
    if (p != nullptr) kdops::sim::guarded_free(p);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s <fp16|bf16|tf32> <Nq> <Nd> <Lq> <Ld> <d>\n", argv[0]);
    return 2;
  }
  const std::string dtype = argv[1];
  int64_t n[5];
  for (int i = 0; i < 5; ++i) n[i] = std::strtoll(argv[2 + i], nullptr, 10);
  if (dtype == "fp16") {
    forward<c10::Half>(n[0], n[1], n[2], n[3], n[4]);
  } else if (dtype == "bf16") {
    forward<c10::BFloat16>(n[0], n[1], n[2], n[3], n[4]);
  } else {
    forward<float>(n[0], n[1], n[2], n[3], n[4]);
  }
#if defined(KDOPS_SIM_RECORD)
  kdops::sim::record::report(stdout);
#endif
  return 0;
}
