// Warp accesses with known shared-memory wavefronts and global sectors, for the access recorder
// (csrc/sim/access_record.h). Built by tests/sim/simbuild.py in "record" mode and run one case per
// process by tests/sim/test_access_record.py, which reads the report at the lines tagged @marker.
//
//   sim_access <case>
//
// Every kernel is one warp. Global buffers come from the simulator's device memory (64-byte
// aligned), shared arrays are 16-byte aligned, so the expected counts follow from the strides alone.
#include "program_options.h"
#include <cuda_pipeline.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <string>

#include "csrc/cuda/mma_ptx.cuh"

namespace sim_access {  // named, so that the report names the kernels

constexpr int kWords = 32 * 33 + 32;  // room for lane * stride, stride <= 33, plus a float4 row

// Lane l loads shared word l * stride (stride 0: all lanes the same word).
__global__ void shared_words(const float* in, float* out, int stride) {
  alignas(16) __shared__ float buf[kWords];
  for (int i = threadIdx.x; i < kWords; i += 32) buf[i] = in[i];
  __syncwarp();
  const float v = buf[threadIdx.x * stride];  // @shared-word
  out[threadIdx.x] = v;
}

// Lane l loads the 16-byte float4 at index l * stride, or the 8-byte float2 at l (wide false).
__global__ void shared_vectors(const float* in, float* out, int stride, bool wide) {
  alignas(16) __shared__ float buf[kWords];
  for (int i = threadIdx.x; i < kWords; i += 32) buf[i] = in[i];
  __syncwarp();
  if (wide) {
    const float4 v = reinterpret_cast<const float4*>(buf)[threadIdx.x * stride];  // @shared-float4
    out[threadIdx.x] = v.x + v.w;
  } else {
    const float2 v = reinterpret_cast<const float2*>(buf)[threadIdx.x];  // @shared-float2
    out[threadIdx.x] = v.x + v.y;
  }
}

// Lane l stores a uint4 built field by field at 16-byte index l: one STS.128 under nvcc, which g++
// splits into four 4-byte stores (the recorder counts them as one 16-byte access).
__global__ void shared_uint4_fields(float* out) {
  alignas(16) __shared__ uint32_t buf[32 * 4];
  const unsigned l = threadIdx.x;
  reinterpret_cast<uint4*>(buf)[l] = make_uint4(l, l + 1, 2 * l, 3 * l);  // @shared-uint4
  __syncwarp();
  out[l] = static_cast<float>(buf[(4 * l + 5) % 128]);
}

// ldmatrix.x4 of 32 rows of 8 bf16 at a row stride of `stride` elements (64: 128 bytes, every
// row in the same four banks; 72: the padded stride, rows in distinct 16-byte bank groups).
__global__ void ldmatrix_rows(const uint16_t* in, uint32_t* out, int stride) {
  alignas(16) __shared__ uint16_t tile[32 * 72];
  for (int i = threadIdx.x; i < 32 * 72; i += 32) tile[i] = in[i];
  __syncwarp();
  uint32_t r[4];
  kdops::cuda::ptx::ldmatrix<4, false>(r, tile + threadIdx.x * stride);  // @ldmatrix
  out[threadIdx.x] = r[0] ^ r[3];
}

// Each lane copies 16 contiguous bytes from global to shared memory with cp.async.
__global__ void cp_async_rows(const float* in, float* out) {
  alignas(16) __shared__ float buf[32 * 4];
  __pipeline_memcpy_async(buf + 4 * threadIdx.x, in + 4 * threadIdx.x, 16);  // @cp-async
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncwarp();
  out[threadIdx.x] = buf[(4 * threadIdx.x + 4) % 128];
}

// Lane l loads global float `offset + l * stride` plainly and with __ldcg, and stores float l.
__global__ void global_words(const float* in, float* out, int stride, int offset) {
  const float a = in[offset + threadIdx.x * stride];          // @global-load
  const float b = __ldcg(in + offset + threadIdx.x * stride);  // @global-ldcg
  out[threadIdx.x] = a + b;                                    // @global-store
}

template <typename T>
T* device_buffer(int n) {
  T* p = static_cast<T*>(kdops::sim::guarded_allocate(n * sizeof(T)));
  for (int i = 0; i < n; ++i) p[i] = T(i % 251);
  return p;
}

template <typename Launch>
std::function<void()> one_warp(Launch launch) {
  return [launch] {
    float* in = device_buffer<float>(kWords);
    float* out = device_buffer<float>(32);
    uint16_t* in16 = device_buffer<uint16_t>(32 * 72);
    launch(in, out, in16);
    kdops::sim::guarded_free(in);
    kdops::sim::guarded_free(out);
    kdops::sim::guarded_free(in16);
  };
}

}  // namespace sim_access

int main(int argc, char** argv) {
  using namespace sim_access;
  using kdops::sim::launch;
  if (!set_schedule_from_args(argc, argv)) return 2;
  auto words = [](int stride) {
    return one_warp([stride](float* in, float* out, uint16_t*) { launch(shared_words, 1, 32, 0, nullptr, in, out, stride); });
  };
  auto vectors = [](int stride, bool wide) {
    return one_warp([=](float* in, float* out, uint16_t*) {
      launch(shared_vectors, 1, 32, 0, nullptr, in, out, stride, wide);
    });
  };
  auto rows = [](int stride) {
    return one_warp([stride](float*, float* out, uint16_t* in16) {
      launch(ldmatrix_rows, 1, 32, 0, nullptr, in16, reinterpret_cast<uint32_t*>(out), stride);
    });
  };
  auto global = [](int stride, int offset) {
    return one_warp([=](float* in, float* out, uint16_t*) {
      launch(global_words, 1, 32, 0, nullptr, in, out, stride, offset);
    });
  };
  const std::map<std::string, std::function<void()>> cases = {
      {"shared_stride_1", words(1)},
      {"shared_stride_2", words(2)},
      {"shared_stride_32", words(32)},
      {"shared_stride_33", words(33)},
      {"shared_broadcast", words(0)},
      {"shared_float4", vectors(1, true)},
      {"shared_float4_stride_2", vectors(2, true)},
      {"shared_float2", vectors(1, false)},
      {"shared_uint4_fields", one_warp([](float*, float* out, uint16_t*) { launch(shared_uint4_fields, 1, 32, 0, nullptr, out); })},
      {"ldmatrix_stride_128B", rows(64)},
      {"ldmatrix_stride_144B", rows(72)},
      {"cp_async", one_warp([](float* in, float* out, uint16_t*) { launch(cp_async_rows, 1, 32, 0, nullptr, in, out); })},
      {"global_stride_1", global(1, 0)},
      {"global_stride_32", global(32, 0)},
      {"global_offset_1", global(1, 1)},
      {"global_broadcast", global(0, 0)},
  };
  const int rc = run_case(cases, argv[1]);
#if defined(KDOPS_SIM_RECORD)
  kdops::sim::record::report(stdout);
#endif
  return rc;
}
