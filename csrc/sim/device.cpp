// The simulator's process-wide settings: options, the simulated device's properties, per-kernel
// shared memory limits (cudaFuncSetAttribute), and the host API's error calls.
#include <mutex>
#include <unordered_map>

#include "device_state.h"
#include "runtime_api.h"

namespace kdops::sim {
namespace {

std::mutex settings_mutex;
Options current_options;
DeviceProperties current_device = h100();
std::unordered_map<const void*, size_t> max_dynamic_smem;  // set by cudaFuncSetAttribute
thread_local cudaError_t last_error = cudaSuccess;

}  // namespace

void set_options(const Options& options) {
  std::lock_guard<std::mutex> lock(settings_mutex);
  current_options = options;
}

Options options() {
  std::lock_guard<std::mutex> lock(settings_mutex);
  return current_options;
}

DeviceProperties h100() {
  return DeviceProperties{"simulated NVIDIA H100", 132, 48 * 1024, 227 * 1024, 1024, {1024, 1024, 64},
                          {2147483647, 65535, 65535}, 32};
}

DeviceProperties small_device() {
  return DeviceProperties{"simulated small device", 2, 48 * 1024, 48 * 1024, 1024, {1024, 1024, 64},
                          {2147483647, 65535, 65535}, 32};
}

void set_device(const DeviceProperties& properties) {
  std::lock_guard<std::mutex> lock(settings_mutex);
  current_device = properties;
}

DeviceProperties device() {
  std::lock_guard<std::mutex> lock(settings_mutex);
  return current_device;
}

namespace detail {

size_t dynamic_smem_limit(const void* kernel, const DeviceProperties& properties) {
  std::lock_guard<std::mutex> lock(settings_mutex);
  const auto it = max_dynamic_smem.find(kernel);
  const size_t limit = it != max_dynamic_smem.end() ? it->second : properties.sharedMemPerBlock;
  return limit < properties.sharedMemPerBlockOptin ? limit : properties.sharedMemPerBlockOptin;
}

}  // namespace detail
}  // namespace kdops::sim

cudaError_t cudaGetLastError() {
  const cudaError_t error = kdops::sim::last_error;
  kdops::sim::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return kdops::sim::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction:
      return "invalid device function";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
  }
  return "unrecognized error code";
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attribute, int value) {
  using namespace kdops::sim;
  std::lock_guard<std::mutex> lock(settings_mutex);
  if (func == nullptr) return last_error = cudaErrorInvalidDeviceFunction;
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > current_device.sharedMemPerBlockOptin) {
    return last_error = cudaErrorInvalidValue;
  }
  max_dynamic_smem[func] = static_cast<size_t>(value);
  return cudaSuccess;
}
