// CUDA's built-in variables and device functions for a g++ translation unit (part of
// cuda_sim.h): synchronisation, warp collectives, bit tricks, atomics, fences, loads, math.
// Every synchronising call takes the caller's file and line as default arguments, so errors
// name the source lines involved.
#pragma once

#include <math.h>  // C++'s <math.h>: float overloads of exp, log, ... in the global namespace

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "access_record.h"
#include "runtime_api.h"

#define threadIdx (::kdops::sim::detail::current().thread_idx)
#define blockIdx (::kdops::sim::detail::current().block_idx)
#define blockDim (::kdops::sim::detail::current().block_dim)
#define gridDim (::kdops::sim::detail::current().grid_dim)

// caller_file/caller_line: the kernel line that called the helper making this call (portable.h's
// KDOPS_SITE), so that errors name the kernel's line beside the helper's.
#define KDOPS_SIM_SITE                                                                                     \
  const char *file = __builtin_FILE(), int line = __builtin_LINE(), const char *caller_file = nullptr, \
  int caller_line = 0
#define KDOPS_SIM_HERE ::kdops::sim::detail::Site { file, line, caller_file, caller_line }

// ---- block barriers
inline void __syncthreads(KDOPS_SIM_SITE) {
  ::kdops::sim::detail::barrier(::kdops::sim::detail::BarrierKind::kSync, 0, KDOPS_SIM_HERE);
}
inline int __syncthreads_count(int predicate, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::barrier(::kdops::sim::detail::BarrierKind::kCount, predicate, KDOPS_SIM_HERE);
}
inline int __syncthreads_and(int predicate, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::barrier(::kdops::sim::detail::BarrierKind::kAnd, predicate, KDOPS_SIM_HERE);
}
inline int __syncthreads_or(int predicate, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::barrier(::kdops::sim::detail::BarrierKind::kOr, predicate, KDOPS_SIM_HERE);
}

// ---- warp collectives
namespace kdops::sim::detail {
template <typename T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffled types are trivially copyable, <= 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
template <typename T>
T shuffle(WarpOp op, unsigned mask, T var, int arg, int width, Site site) {
  return from_bits<T>(warp_op(op, mask, to_bits(var), arg, width, site));
}
}  // namespace kdops::sim::detail

inline void __syncwarp(unsigned mask = 0xffffffffu, KDOPS_SIM_SITE) {
  ::kdops::sim::detail::warp_op(::kdops::sim::detail::WarpOp::kSyncWarp, mask, 0, 0, warpSize, KDOPS_SIM_HERE);
}
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::shuffle(::kdops::sim::detail::WarpOp::kShflIdx, mask, var, src_lane, width,
                                       KDOPS_SIM_HERE);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::shuffle(::kdops::sim::detail::WarpOp::kShflUp, mask, var, static_cast<int>(delta),
                                       width, KDOPS_SIM_HERE);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::shuffle(::kdops::sim::detail::WarpOp::kShflDown, mask, var, static_cast<int>(delta),
                                       width, KDOPS_SIM_HERE);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, KDOPS_SIM_SITE) {
  return ::kdops::sim::detail::shuffle(::kdops::sim::detail::WarpOp::kShflXor, mask, var, lane_mask, width,
                                       KDOPS_SIM_HERE);
}
inline unsigned __ballot_sync(unsigned mask, int predicate, KDOPS_SIM_SITE) {
  return static_cast<unsigned>(::kdops::sim::detail::warp_op(::kdops::sim::detail::WarpOp::kBallot, mask,
                                                             predicate != 0, 0, warpSize, KDOPS_SIM_HERE));
}
inline int __any_sync(unsigned mask, int predicate, KDOPS_SIM_SITE) {
  return __ballot_sync(mask, predicate, file, line, caller_file, caller_line) != 0;
}
inline int __all_sync(unsigned mask, int predicate, KDOPS_SIM_SITE) {
  return __ballot_sync(mask, predicate, file, line, caller_file, caller_line) == mask;
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned value, KDOPS_SIM_SITE) {
  return static_cast<unsigned>(
      ::kdops::sim::detail::warp_op(::kdops::sim::detail::WarpOp::kReduceAdd, mask, value, 0, warpSize, KDOPS_SIM_HERE));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned value, KDOPS_SIM_SITE) {
  return static_cast<unsigned>(
      ::kdops::sim::detail::warp_op(::kdops::sim::detail::WarpOp::kReduceMin, mask, value, 0, warpSize, KDOPS_SIM_HERE));
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned value, KDOPS_SIM_SITE) {
  return static_cast<unsigned>(
      ::kdops::sim::detail::warp_op(::kdops::sim::detail::WarpOp::kReduceMax, mask, value, 0, warpSize, KDOPS_SIM_HERE));
}
// Without convergence information: the lanes of the caller's warp that have not exited. Lanes run
// one after another between collectives, so this is not the set of lanes executing the call with
// the caller; code that shuffles with this mask in divergent branches fails with an error here.
unsigned __activemask();

// ---- bit manipulation
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) | __brev(static_cast<unsigned>(x >> 32));
}

// ---- atomics: relaxed read-modify-writes, as CUDA's (order them with __threadfence).
namespace kdops::sim::detail {
template <typename T, typename F>
T atomic_update(T* address, F f) {  // CAS loop for what the hardware has no instruction for here
  atomic_point(address);
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(address, &old, f(old), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <typename T>
T atomic_update_float(T* address, T value) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* bits = reinterpret_cast<Bits*>(address);
  return from_bits<T>(atomic_update(bits, [&](Bits old) { return static_cast<Bits>(to_bits(from_bits<T>(old) + value)); }));
}
template <typename T>
struct Identity {
  using type = T;
};
template <typename T>
using Same = typename Identity<T>::type;  // a parameter that takes no part in deduction
template <typename T>
using AtomicInt = std::enable_if_t<std::is_same_v<T, int> || std::is_same_v<T, unsigned> ||
                                       std::is_same_v<T, unsigned long long> || std::is_same_v<T, long long>,
                                   T>;
}  // namespace kdops::sim::detail

template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicAdd(T* address, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* address, float value) { return ::kdops::sim::detail::atomic_update_float(address, value); }
inline double atomicAdd(double* address, double value) { return ::kdops::sim::detail::atomic_update_float(address, value); }
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicSub(T* address, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  return __atomic_fetch_sub(address, value, __ATOMIC_RELAXED);
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicMin(T* address, ::kdops::sim::detail::Same<T> value) {
  return ::kdops::sim::detail::atomic_update(address, [&](T old) { return value < old ? value : old; });
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicMax(T* address, ::kdops::sim::detail::Same<T> value) {
  return ::kdops::sim::detail::atomic_update(address, [&](T old) { return value > old ? value : old; });
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicAnd(T* address, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  return __atomic_fetch_and(address, value, __ATOMIC_RELAXED);
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicOr(T* address, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  return __atomic_fetch_or(address, value, __ATOMIC_RELAXED);
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicXor(T* address, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  return __atomic_fetch_xor(address, value, __ATOMIC_RELAXED);
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicExch(T* address, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  return __atomic_exchange_n(address, value, __ATOMIC_RELAXED);
}
inline float atomicExch(float* address, float value) {
  ::kdops::sim::detail::atomic_point(address);
  return ::kdops::sim::detail::from_bits<float>(
      __atomic_exchange_n(reinterpret_cast<uint32_t*>(address), ::kdops::sim::detail::to_bits(value), __ATOMIC_RELAXED));
}
template <typename T>
::kdops::sim::detail::AtomicInt<T> atomicCAS(T* address, ::kdops::sim::detail::Same<T> compare, ::kdops::sim::detail::Same<T> value) {
  ::kdops::sim::detail::atomic_point(address);
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;  // the old value either way
}
inline unsigned atomicInc(unsigned* address, unsigned limit) {  // ((old >= limit) ? 0 : old + 1)
  return ::kdops::sim::detail::atomic_update(address, [&](unsigned old) { return old >= limit ? 0u : old + 1; });
}
inline unsigned atomicDec(unsigned* address, unsigned limit) {  // ((old == 0 || old > limit) ? limit : old - 1)
  return ::kdops::sim::detail::atomic_update(address,
                                             [&](unsigned old) { return old == 0 || old > limit ? limit : old - 1; });
}

// ---- fences: a launch's threads all run on one OS thread and switch only at collectives, so a
// fence orders nothing the simulator could reorder in a block; it stays a compiler barrier.
// Between blocks, __threadfence and the atomics around it make the release and acquire patterns
// of global_memory.h's model (and TSan's happens-before edges): runtime_api.h's fence_point.
inline void __threadfence() {
  ::kdops::sim::detail::fence_point();
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __threadfence(); }

// ---- loads and stores with cache hints. __ldg and __ldca are plain loads. The others are what
// kernels use for data another block of the launch wrote or reads (L2 and not L1, which is not
// coherent between SMs): they go through global_memory.h's model, which fails the launch when a
// load reads another block's store without the release/acquire ordering CUDA requires.
template <typename T>
T __ldg(const T* p) { return *p; }
template <typename T>
T __ldca(const T* p) { return *p; }

namespace kdops::sim::detail {
template <typename T>
T weak_load_of(const T* p, Site site) {
  static_assert(std::is_trivially_copyable_v<T>, "cache-hinted loads read trivially copyable types");
  T v;
  KDOPS_SIM_RECORD_ACCESS(kLoad, p, sizeof(T), site.caller_file != nullptr ? site.caller_file : site.file,
                          site.caller_file != nullptr ? site.caller_line : site.line);
  weak_load(&v, p, sizeof(T), site);
  return v;
}
template <typename T>
void weak_store_of(T* p, const T& v, Site site) {
  static_assert(std::is_trivially_copyable_v<T>, "cache-hinted stores write trivially copyable types");
  KDOPS_SIM_RECORD_ACCESS(kStore, p, sizeof(T), site.caller_file != nullptr ? site.caller_file : site.file,
                          site.caller_file != nullptr ? site.caller_line : site.line);
  weak_store(p, &v, sizeof(T), site);
}
}  // namespace kdops::sim::detail

template <typename T>
T __ldcg(const T* p, KDOPS_SIM_SITE) { return ::kdops::sim::detail::weak_load_of(p, KDOPS_SIM_HERE); }
template <typename T>
T __ldcs(const T* p, KDOPS_SIM_SITE) { return ::kdops::sim::detail::weak_load_of(p, KDOPS_SIM_HERE); }
template <typename T>
T __ldlu(const T* p, KDOPS_SIM_SITE) { return ::kdops::sim::detail::weak_load_of(p, KDOPS_SIM_HERE); }
template <typename T>
T __ldcv(const T* p, KDOPS_SIM_SITE) { return ::kdops::sim::detail::weak_load_of(p, KDOPS_SIM_HERE); }
template <typename T>
void __stcg(T* p, T v, KDOPS_SIM_SITE) { ::kdops::sim::detail::weak_store_of(p, v, KDOPS_SIM_HERE); }
template <typename T>
void __stcs(T* p, T v, KDOPS_SIM_SITE) { ::kdops::sim::detail::weak_store_of(p, v, KDOPS_SIM_HERE); }
template <typename T>
void __stwb(T* p, T v, KDOPS_SIM_SITE) { ::kdops::sim::detail::weak_store_of(p, v, KDOPS_SIM_HERE); }
template <typename T>
void __stwt(T* p, T v, KDOPS_SIM_SITE) { ::kdops::sim::detail::weak_store_of(p, v, KDOPS_SIM_HERE); }

// ---- math: the intrinsics compute the exact functions (the hardware's approximations differ
// by a few ulp; compare with dtype tolerances, never bitwise against a GPU).
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x > 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float_as_int(float x) { return ::kdops::sim::detail::from_bits<int>(::kdops::sim::detail::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return ::kdops::sim::detail::from_bits<unsigned>(::kdops::sim::detail::to_bits(x)); }
inline float __int_as_float(int x) { return ::kdops::sim::detail::from_bits<float>(::kdops::sim::detail::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return ::kdops::sim::detail::from_bits<float>(::kdops::sim::detail::to_bits(x)); }
inline long long __double_as_longlong(double x) {
  return ::kdops::sim::detail::from_bits<long long>(::kdops::sim::detail::to_bits(x));
}
inline double __longlong_as_double(long long x) {
  return ::kdops::sim::detail::from_bits<double>(::kdops::sim::detail::to_bits(x));
}
