// The run-time choice of the CPU kernels' vector ISA (cpu_isa.h).
#include "cpu/cpu_isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace kdops::cpu {

namespace {

#if defined(__x86_64__) || defined(__i386__)
bool supports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma");
    case CpuIsa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default:
      return true;
  }
}
#else
bool supports(CpuIsa isa) { return isa == CpuIsa::generic; }
#endif

}  // namespace

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx2: return "avx2";
    default: return "generic";
  }
}

CpuIsa cpu_isa() {
  const char* env = std::getenv("KDOPS_CPU_ISA");
  if (env == nullptr || *env == '\0') {
    for (CpuIsa isa : {CpuIsa::avx512, CpuIsa::avx2})
      if (supports(isa)) return isa;
    return CpuIsa::generic;
  }
  for (CpuIsa isa : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512}) {
    if (std::strcmp(env, isa_name(isa)) != 0) continue;
    TORCH_CHECK(supports(isa), "KDOPS_CPU_ISA=", env, ": this CPU (or this build's architecture) "
                "lacks the ", env, " instructions; unset it or pick one it supports");
    return isa;
  }
  TORCH_CHECK(false, "KDOPS_CPU_ISA=", env, " is not one of generic, avx2, avx512");
}

}  // namespace kdops::cpu
