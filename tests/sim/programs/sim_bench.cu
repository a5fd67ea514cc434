// Cost of the simulator's synchronisation (not a test; run by hand):
//   g++ -O2 <tests/sim/simbuild.py's SIM_FLAGS> tests/sim/programs/sim_bench.cu csrc/sim/*.cpp -pthread -ldl
// Prints, for a 64 x 256 grid, the time per launch with k barriers or k warp shuffles per thread,
// and the cost per thread per barrier / per lane per shuffle (slope against k = 0). Times are the
// thread's CPU time, so a busy machine inflates them less than wall-clock time would.
#include <time.h>

#include <cstdio>
#include <vector>

__global__ void barriers(float* out, int k) {
  alignas(16) __shared__ float s[256];
  float v = threadIdx.x;
  for (int i = 0; i < k; ++i) {
    s[threadIdx.x] = v;
    __syncthreads();
    v += s[(threadIdx.x + 1) % 256];
  }
  out[blockIdx.x * 256 + threadIdx.x] = v;
}

__global__ void shuffles(float* out, int k) {
  float v = threadIdx.x;
  for (int i = 0; i < k; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1 + i % 31);
  out[blockIdx.x * 256 + threadIdx.x] = v;
}

double ms_per_launch(void (*kernel)(float*, int), int k, std::vector<float>& out) {
  const int reps = 20;
  kdops::sim::launch(kernel, dim3(64), dim3(256), 0, nullptr, out.data(), k);  // warm-up: stacks
  timespec start, end;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
  for (int r = 0; r < reps; ++r) kdops::sim::launch(kernel, dim3(64), dim3(256), 0, nullptr, out.data(), k);
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
  return ((end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) * 1e-6) / reps;
}

int main() {
  std::vector<float> out(64 * 256);
  const double threads = 64 * 256;
  const double base = ms_per_launch(barriers, 0, out);
  std::printf("64x256 grid, no sync: %.2f ms per launch\n", base);
  for (int k : {4, 16, 56}) {
    const double t = ms_per_launch(barriers, k, out);
    std::printf("%2d barriers: %6.2f ms per launch, %.1f ns per thread per barrier\n", k, t, (t - base) * 1e6 / (threads * k));
  }
  for (int k : {5, 20}) {
    const double t = ms_per_launch(shuffles, k, out);
    std::printf("%2d shuffles: %6.2f ms per launch, %.1f ns per lane per shuffle\n", k, t, (t - base) * 1e6 / (threads * k));
  }
}
