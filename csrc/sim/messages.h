// Text for the simulator's error messages: names of the built-ins, source sites, lane sets and
// the kernel being run.
#pragma once

#include <string>

#include "runtime_api.h"

namespace kdops::sim::detail {

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
const char* barrier_name(BarrierKind kind);
const char* warp_op_name(WarpOp op);
std::string where(Site site);          // "file:line", the kernel's line first when a helper called
std::string triple(uint3 v);           // "(x,y,z)"
std::string lanes(unsigned mask);      // "0-15,17"
// The launch's name if given, else the kernel's dynamic symbol, else its type and address.
std::string kernel_name(const Launch& launch);

}  // namespace kdops::sim::detail
