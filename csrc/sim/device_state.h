// Between device.cpp and runtime.cpp: what a launch reads of the process-wide settings.
#pragma once

#include <cstddef>

#include "runtime_api.h"

namespace kdops::sim::detail {

// The dynamic shared memory `kernel` may use on `properties`: the default limit, or what
// cudaFuncSetAttribute raised it to, never more than the opt-in limit.
size_t dynamic_smem_limit(const void* kernel, const DeviceProperties& properties);

}  // namespace kdops::sim::detail
