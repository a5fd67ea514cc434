// The simulator's process-wide settings: options, the simulated device's properties, per-kernel
// shared memory limits (cudaFuncSetAttribute), the launch configuration checks against them, and
// the host API's error calls.
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "device_state.h"
#include "messages.h"
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

void check_configuration(const Launch& launch, const DeviceProperties& props) {
  const dim3 g = launch.grid, b = launch.block;
  const uint64_t block_threads = uint64_t{b.x} * b.y * b.z;
  const std::string config = format("grid (%u,%u,%u), block (%u,%u,%u)", g.x, g.y, g.z, b.x, b.y, b.z);
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0) {
    throw std::runtime_error("kdops.sim: invalid configuration argument: " + config + " has a zero dimension");
  }
  if (b.x > static_cast<unsigned>(props.maxThreadsDim[0]) || b.y > static_cast<unsigned>(props.maxThreadsDim[1]) ||
      b.z > static_cast<unsigned>(props.maxThreadsDim[2]) || block_threads > static_cast<uint64_t>(props.maxThreadsPerBlock)) {
    throw std::runtime_error(format("kdops.sim: invalid configuration argument: %s: a block has at most %d threads "
                                    "and dimensions (%d,%d,%d)",
                                    config.c_str(), props.maxThreadsPerBlock, props.maxThreadsDim[0],
                                    props.maxThreadsDim[1], props.maxThreadsDim[2]));
  }
  if (g.x > static_cast<unsigned>(props.maxGridSize[0]) || g.y > static_cast<unsigned>(props.maxGridSize[1]) ||
      g.z > static_cast<unsigned>(props.maxGridSize[2])) {
    throw std::runtime_error(format("kdops.sim: invalid configuration argument: %s: the grid is at most (%d,%d,%d)",
                                    config.c_str(), props.maxGridSize[0], props.maxGridSize[1], props.maxGridSize[2]));
  }
  const size_t smem_limit = dynamic_smem_limit(launch.kernel, props);
  if (launch.dynamic_smem_bytes > smem_limit) {
    throw std::runtime_error(format(
        "kdops.sim: invalid argument: kernel %s asks for %zu bytes of dynamic shared memory, more than its limit of "
        "%zu on the %s (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n) raises the "
        "limit up to %zu)",
        kernel_name(launch).c_str(), launch.dynamic_smem_bytes, smem_limit, props.name, props.sharedMemPerBlockOptin));
  }
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
