// Reports the device code this library was compiled for: nvcc's __CUDA_ARCH_LIST__ (the archs
// with machine code, e.g. "800,860,890,900,1000") and, after a space, "ptx:" and the arch whose
// PTX is embedded for newer GPUs (KDOPS_PTX_ARCH from setup.py; 0 = none).
#define KDOPS_STRINGIFY_(...) #__VA_ARGS__  // variadic: the arch list holds commas
#define KDOPS_STRINGIFY(...) KDOPS_STRINGIFY_(__VA_ARGS__)

#ifndef KDOPS_PTX_ARCH
#define KDOPS_PTX_ARCH 0
#endif

namespace kdops::cuda {

const char* compiled_arch_list() {
#ifdef __CUDA_ARCH_LIST__
  return KDOPS_STRINGIFY(__CUDA_ARCH_LIST__) " ptx:" KDOPS_STRINGIFY(KDOPS_PTX_ARCH);
#else
  return "unknown";
#endif
}

// nvcc's own version ("13.0"), the toolkit the device code was compiled with.
const char* compiler_version() {
  return KDOPS_STRINGIFY(__CUDACC_VER_MAJOR__) "." KDOPS_STRINGIFY(__CUDACC_VER_MINOR__);
}

}  // namespace kdops::cuda
