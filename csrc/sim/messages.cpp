// Text for the simulator's error messages (see messages.h).
#include "messages.h"

#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace kdops::sim::detail {

const char* barrier_name(BarrierKind kind) {
  switch (kind) {
    case BarrierKind::kSync:
      return "__syncthreads";
    case BarrierKind::kCount:
      return "__syncthreads_count";
    case BarrierKind::kAnd:
      return "__syncthreads_and";
    case BarrierKind::kOr:
      return "__syncthreads_or";
  }
  return "?";
}

const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kShflIdx:
      return "__shfl_sync";
    case WarpOp::kShflUp:
      return "__shfl_up_sync";
    case WarpOp::kShflDown:
      return "__shfl_down_sync";
    case WarpOp::kShflXor:
      return "__shfl_xor_sync";
    case WarpOp::kBallot:
      return "__ballot_sync/__any_sync/__all_sync";
    case WarpOp::kSyncWarp:
      return "__syncwarp";
    case WarpOp::kReduceAdd:
      return "__reduce_add_sync";
    case WarpOp::kReduceMin:
      return "__reduce_min_sync";
    case WarpOp::kReduceMax:
      return "__reduce_max_sync";
    case WarpOp::kCall:
      return "a warp-wide call";
  }
  return "?";
}

std::string format(const char* fmt, ...) {
  va_list args, again;
  va_start(args, fmt);
  va_copy(again, args);
  std::string out(static_cast<size_t>(vsnprintf(nullptr, 0, fmt, args)), '\0');
  vsnprintf(out.data(), out.size() + 1, fmt, again);
  va_end(again);
  va_end(args);
  return out;
}

std::string where(Site site) {
  if (site.caller_file == nullptr) return format("%s:%d", site.file, site.line);
  return format("%s:%d, in a helper at %s:%d", site.caller_file, site.caller_line, site.file, site.line);
}

std::string triple(uint3 v) { return format("(%u,%u,%u)", v.x, v.y, v.z); }

std::string lanes(unsigned mask) {
  std::string out;
  for (int lane = 0; lane < 32;) {
    if (!((mask >> lane) & 1)) {
      ++lane;
      continue;
    }
    int end = lane;
    while (end + 1 < 32 && ((mask >> (end + 1)) & 1)) ++end;
    if (!out.empty()) out += ",";
    out += end == lane ? format("%d", lane) : format("%d-%d", lane, end);
    lane = end + 1;
  }
  return out.empty() ? "none" : out;
}

std::string kernel_name(const Launch& launch) {
  if (launch.name != nullptr) return launch.name;
  Dl_info info;
  if (dladdr(launch.kernel, &info) != 0 && info.dli_sname != nullptr && info.dli_saddr == launch.kernel) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
    std::free(demangled);
    return name;
  }
  // A kernel with internal linkage has no dynamic symbol: name its type, "[with Kernel = ...]".
  std::string type = launch.signature;
  const size_t begin = type.find("Kernel = ");
  const size_t end = type.rfind(']');
  if (begin != std::string::npos && end != std::string::npos && end > begin) type = type.substr(begin + 9, end - begin - 9);
  return format("of type %s at %p", type.c_str(), launch.kernel);
}

}  // namespace kdops::sim::detail
