// One core's FMA peak: independent chains of 512-bit (and 256-bit) fused multiply-adds, the
// instruction the MaxSim panel kernel spends its time in, timed in thread CPU time (best of 5).
// 8 to 24 chains cover the FMA latency (4 cycles) times the FMA issue rate of current x86 cores.
// Also the int8 dot-product peak of the quantized kernel's instruction (AVX-512 VNNI vpdpbusd:
// 4 u8 x s8 products added into each int32 lane, counted as 2 ops per product).
//
//   g++ -O2 -mavx512f -mavx512vnni -mfma -o /tmp/fma_peak benchmarks/cpu/fma_peak.cpp && /tmp/fma_peak
#include <immintrin.h>

#include <cstdio>
#include <ctime>

namespace {

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// kChains accumulators, each a dependent chain a = fma(a, x, y); x passes through an empty asm
// so the compiler cannot fold the loop.
template <typename V, int kChains, V (*kSet)(float), V (*kFma)(V, V, V)>
__attribute__((noinline)) V chains(long iterations) {
  V a[kChains];
  V x = kSet(0.999999f), y = kSet(1e-7f);
  for (int c = 0; c < kChains; ++c) a[c] = kSet(static_cast<float>(c));
  for (long i = 0; i < iterations; ++i) {
#pragma GCC unroll 32
    for (int c = 0; c < kChains; ++c) a[c] = kFma(a[c], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  V sum = a[0];
  for (int c = 1; c < kChains; ++c) sum = kFma(sum, x, a[c]);
  return sum;
}

// kOps: operations per instruction (fp32 FMA: 2 per lane; vpdpbusd: 2 per int8 product, 4 products per lane).
template <typename V, int kChains, V (*kSet)(float), V (*kFma)(V, V, V), int kOps = 2 * int(sizeof(V) / 4)>
void report(const char* name, const char* unit = "GFLOP/s fp32") {
  constexpr long kIterations = 20000000;
  double best = 0;
  for (int repeat = 0; repeat < 5; ++repeat) {
    const double start = thread_seconds();
    volatile V sink = chains<V, kChains, kSet, kFma>(kIterations);
    (void)sink;
    const double gflops = double(kOps) * kChains * kIterations / (thread_seconds() - start) / 1e9;
    if (gflops > best) best = gflops;
  }
  std::printf("%s, %2d chains: %.1f %s\n", name, kChains, best, unit);
}

__m512 set512(float v) { return _mm512_set1_ps(v); }
__m512 fma512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m256 set256(float v) { return _mm256_set1_ps(v); }
__m256 fma256(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
__m512i seti8(float v) { return _mm512_set1_epi8(static_cast<char>(v)); }
__m512i dpbusd(__m512i a, __m512i b, __m512i c) { return _mm512_dpbusd_epi32(a, b, c); }

}  // namespace

int main() {
  report<__m512, 8, set512, fma512>("zmm");
  report<__m512, 16, set512, fma512>("zmm");
  report<__m512, 24, set512, fma512>("zmm");
  report<__m256, 8, set256, fma256>("ymm");
  report<__m256, 12, set256, fma256>("ymm");
  report<__m512i, 8, seti8, dpbusd, 2 * 64>("zmm vpdpbusd", "GOP/s int8");
  report<__m512i, 16, seti8, dpbusd, 2 * 64>("zmm vpdpbusd", "GOP/s int8");
  report<__m512i, 24, seti8, dpbusd, 2 * 64>("zmm vpdpbusd", "GOP/s int8");
  return 0;
}
