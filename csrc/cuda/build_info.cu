// Reports the device archs this library was compiled for (nvcc's __CUDA_ARCH_LIST__, e.g. "900").
#define KDOPS_STRINGIFY_(x) #x
#define KDOPS_STRINGIFY(x) KDOPS_STRINGIFY_(x)

namespace kdops::cuda {

const char* compiled_arch_list() {
#ifdef __CUDA_ARCH_LIST__
  return KDOPS_STRINGIFY(__CUDA_ARCH_LIST__);
#else
  return "unknown";
#endif
}

}  // namespace kdops::cuda
