// Between device.cpp and runtime.cpp: what a launch needs of the process-wide settings.
#pragma once

#include <cstddef>

#include "runtime_api.h"

namespace kdops::sim::detail {

// The dynamic shared memory `kernel` may use on `properties`: the default limit, or what
// cudaFuncSetAttribute raised it to, never more than the opt-in limit.
size_t dynamic_smem_limit(const void* kernel, const DeviceProperties& properties);

// Throws std::runtime_error, as CUDA's launch would fail, for block and grid sizes out of the
// device's range and dynamic shared memory over the kernel's limit. (Static __shared__ use is not
// known to the simulator and not counted.)
void check_configuration(const Launch& launch, const DeviceProperties& properties);

}  // namespace kdops::sim::detail
