// The access recorder (see access_record.h). Compiled to nothing without KDOPS_SIM_RECORD; never
// itself instrumented (simbuild.py instruments only the kernel's translation unit).
#if defined(KDOPS_SIM_RECORD)
#include "access_record.h"

#include <dlfcn.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "guarded_heap.h"
#include "runtime_api.h"
#include "static_shared.h"

namespace kdops::sim::record {

namespace {

constexpr unsigned kBanks = 32, kBankBytes = 4, kSectorBytes = 32;

struct Site {
  const char* file;  // null: a plain access at pc
  int line;
  uintptr_t pc;
  Kind kind;
  bool shared;
  size_t bytes;
  auto key() const { return std::make_tuple(file, line, pc, kind, shared, bytes); }
  bool operator<(const Site& o) const { return key() < o.key(); }
};

struct LaneAccess {
  unsigned lane;
  uintptr_t address;
};

struct Totals {
  uint64_t requests = 0, lanes = 0, units = 0, ideal = 0;  // units: wavefronts or sectors
};

// A lane's last plain load (or store), not yet counted: g++ splits a 16-byte vector access (a uint4
// built field by field, a float4 converted in place) into 4-byte ones, loads and stores
// interleaved and in any order, where nvcc emits one LDS.128 / LDG.128; so the lane's next load
// (store) joins it when it adjoins it in straight-line code (a later code address) and both lie in
// one aligned 16-byte block.
struct Pending {
  Site site;
  uintptr_t address = 0;
  uintptr_t last_pc = 0;
  bool valid = false;
};

struct State {
  std::string kernel;
  std::map<std::pair<unsigned, Kind>, Pending> pending;  // by thread and kind
  size_t dynamic_smem_bytes = 0;
  bool suppressed = false;
  std::map<std::pair<unsigned, Site>, uint64_t> occurrences;  // (thread, site) -> accesses so far
  std::map<std::tuple<unsigned, Site, uint64_t>, std::vector<LaneAccess>> warp_accesses;  // (warp, site, occurrence)
  std::map<std::pair<std::string, Site>, Totals> totals;
};

State& state() {
  static State s;
  return s;
}

// Lanes served together: 32 for accesses of up to 4 bytes, half-warps for 8 bytes, quarter-warps
// for 16 bytes and for ldmatrix's 8-row phases (one 128-byte wavefront per phase at best).
unsigned phase_lanes(Kind kind, size_t bytes) {
  if (kind == Kind::kLdmatrix || bytes > 8) return 8;
  return bytes > 4 ? 16 : 32;
}

// Wavefronts of one warp access: per phase, the most distinct 4-byte words any bank must serve
// (one word read by several lanes is a broadcast); ideal: the phase's distinct words / 32.
std::pair<uint64_t, uint64_t> wavefronts(const std::vector<LaneAccess>& lanes, Kind kind, size_t bytes) {
  const unsigned per_phase = phase_lanes(kind, bytes);
  std::map<unsigned, std::set<uintptr_t>> words_of_phase;
  for (const LaneAccess& a : lanes) {
    for (uintptr_t w = a.address / kBankBytes; w <= (a.address + bytes - 1) / kBankBytes; ++w) {
      words_of_phase[a.lane / per_phase].insert(w);
    }
  }
  uint64_t total = 0, ideal = 0;
  for (const auto& [phase, words] : words_of_phase) {
    unsigned per_bank[kBanks] = {};
    for (uintptr_t w : words) ++per_bank[w % kBanks];
    total += *std::max_element(per_bank, per_bank + kBanks);
    ideal += (words.size() + kBanks - 1) / kBanks;
  }
  return {total, ideal};
}

// Sectors of one warp access: the distinct 32-byte sectors its bytes touch; ideal: its distinct
// bytes / 32, rounded up (what the same bytes need when contiguous and aligned).
std::pair<uint64_t, uint64_t> sectors(std::vector<LaneAccess> lanes, size_t bytes) {
  std::set<uintptr_t> touched;
  std::sort(lanes.begin(), lanes.end(), [](const LaneAccess& a, const LaneAccess& b) { return a.address < b.address; });
  uintptr_t distinct = 0, covered_to = 0;
  for (const LaneAccess& a : lanes) {
    for (uintptr_t s = a.address / kSectorBytes; s <= (a.address + bytes - 1) / kSectorBytes; ++s) touched.insert(s);
    const uintptr_t begin = std::max(a.address, covered_to), end = a.address + bytes;
    if (end > begin) distinct += end - begin;
    covered_to = std::max(covered_to, end);
  }
  return {touched.size(), (distinct + kSectorBytes - 1) / kSectorBytes};
}

bool in_dynamic_smem(const detail::ThreadState& t, uintptr_t address) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.dynamic_smem);
  return address >= begin && address < begin + state().dynamic_smem_bytes;
}

uintptr_t module_offset(uintptr_t pc) {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(pc), &info) == 0) return pc;
  return pc - reinterpret_cast<uintptr_t>(info.dli_fbase) - 1;  // the call instruction, not the return address
}

}  // namespace

namespace {

void count(State& s, unsigned thread, const Site& site, uintptr_t address) {
  const uint64_t occurrence = s.occurrences[{thread, site}]++;
  s.warp_accesses[{thread / 32, site, occurrence}].push_back(LaneAccess{thread % 32, address});
}

void flush(State& s, unsigned thread, Pending& p) {
  if (p.valid) count(s, thread, p.site, p.address);
  p.valid = false;
}

bool joins(const Pending& p, Kind kind, bool shared, uintptr_t address, size_t bytes, uintptr_t pc) {
  const uintptr_t lo = std::min(p.address, address), hi = std::max(p.address + p.site.bytes, address + bytes);
  return p.valid && p.site.kind == kind && p.site.shared == shared && pc > p.last_pc &&
         (address == p.address + p.site.bytes || address + bytes == p.address) && lo / 16 == (hi - 1) / 16;
}

}  // namespace

void access(Kind kind, const void* address, size_t bytes, const char* file, int line, uintptr_t pc) {
  State& s = state();
  const detail::ThreadState* t = detail::current_thread;
  if (t == nullptr || s.suppressed || bytes == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  const bool shared = in_dynamic_smem(*t, a) || detail::in_static_shared(address);
  if (!shared && !detail::in_guarded_allocation(address)) return;
  const unsigned thread = t->thread_idx.x + t->block_dim.x * (t->thread_idx.y + t->block_dim.y * t->thread_idx.z);
  Pending& p = s.pending[{thread, kind}];
  if (file == nullptr && joins(p, kind, shared, a, bytes, pc)) {
    p.site.bytes += bytes;
    p.address = std::min(p.address, a);
    p.last_pc = pc;
    return;
  }
  flush(s, thread, p);
  const Site site{file, line, file == nullptr ? module_offset(pc) : 0, kind, shared, bytes};
  if (file != nullptr) {
    count(s, thread, site, a);
  } else {
    p = Pending{site, a, pc, true};
  }
}

void begin_launch(const char* kernel, size_t dynamic_smem_bytes) {
  State& s = state();
  s.kernel = kernel;
  s.dynamic_smem_bytes = dynamic_smem_bytes;
  s.warp_accesses.clear();  // of a block that failed
  s.occurrences.clear();
  s.pending.clear();
}

void end_block() {
  State& s = state();
  for (auto& [key, pending] : s.pending) flush(s, key.first, pending);
  for (const auto& [key, lanes] : s.warp_accesses) {
    const Site& site = std::get<1>(key);
    const auto [units, ideal] = site.shared ? wavefronts(lanes, site.kind, site.bytes) : sectors(lanes, site.bytes);
    Totals& t = s.totals[{s.kernel, site}];
    ++t.requests;
    t.lanes += lanes.size();
    t.units += units;
    t.ideal += ideal;
  }
  s.warp_accesses.clear();
  s.occurrences.clear();
}

void suppress(bool on) { state().suppressed = on; }

void report(std::FILE* out) {
  static const char* const kKinds[] = {"load", "store", "ldmatrix", "cp.async"};
  for (const auto& [key, t] : state().totals) {
    const auto& [kernel, site] = key;
    if (site.file != nullptr) {
      std::fprintf(out, "kdops.sim.access\tsite=%s:%d", site.file, site.line);
    } else {
      std::fprintf(out, "kdops.sim.access\tsite=pc:0x%lx", static_cast<unsigned long>(site.pc));
    }
    std::fprintf(out, "\tspace=%s\tkind=%s\tbytes=%zu\trequests=%llu\tlanes=%llu\t%s=%llu\tideal=%llu\tkernel=%s\n",
                 site.shared ? "shared" : "global", kKinds[static_cast<int>(site.kind)], site.bytes,
                 static_cast<unsigned long long>(t.requests), static_cast<unsigned long long>(t.lanes),
                 site.shared ? "wavefronts" : "sectors", static_cast<unsigned long long>(t.units),
                 static_cast<unsigned long long>(t.ideal), kernel.c_str());
  }
  std::fflush(out);
}

}  // namespace kdops::sim::record

// g++'s ThreadSanitizer instrumentation of the kernel's plain loads and stores (see access_record.h),
// without ThreadSanitizer's runtime: every access calls __tsan_{read,write}N (unlike AddressSanitizer's,
// which drops the check of a store to bytes a load of the same block already checked).
namespace {
void plain(kdops::sim::record::Kind kind, const void* address, size_t size, void* pc) {
  kdops::sim::record::access(kind, address, size, nullptr, 0, reinterpret_cast<uintptr_t>(pc));
}
}  // namespace

#define KDOPS_SIM_RECORD_PLAIN(size)                                                          \
  extern "C" void __tsan_read##size(void* a) {                                                \
    plain(kdops::sim::record::Kind::kLoad, a, size, __builtin_return_address(0));             \
  }                                                                                           \
  extern "C" void __tsan_write##size(void* a) {                                               \
    plain(kdops::sim::record::Kind::kStore, a, size, __builtin_return_address(0));            \
  }                                                                                           \
  extern "C" void __tsan_unaligned_read##size(void* a) {                                      \
    plain(kdops::sim::record::Kind::kLoad, a, size, __builtin_return_address(0));             \
  }                                                                                           \
  extern "C" void __tsan_unaligned_write##size(void* a) {                                     \
    plain(kdops::sim::record::Kind::kStore, a, size, __builtin_return_address(0));            \
  }
KDOPS_SIM_RECORD_PLAIN(1)
KDOPS_SIM_RECORD_PLAIN(2)
KDOPS_SIM_RECORD_PLAIN(4)
KDOPS_SIM_RECORD_PLAIN(8)
KDOPS_SIM_RECORD_PLAIN(16)
#undef KDOPS_SIM_RECORD_PLAIN
extern "C" void __tsan_read_range(void* a, unsigned long size) {
  plain(kdops::sim::record::Kind::kLoad, a, size, __builtin_return_address(0));
}
extern "C" void __tsan_write_range(void* a, unsigned long size) {
  plain(kdops::sim::record::Kind::kStore, a, size, __builtin_return_address(0));
}
// Atomics (the simulator's atomicAdd and friends are __atomic builtins, which the instrumentation
// turns into these calls): done here, relaxed as the simulator does them, and not recorded (the
// model counts the plain, ldmatrix, cp.async and cache-hinted accesses of the forward; a kernel's
// atomics, such as the backward's hit counts, are not part of it).
#define KDOPS_SIM_RECORD_ATOMIC(bits, type)                                                                   \
  extern "C" type __tsan_atomic##bits##_load(const volatile type* a, int) {                                   \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                           \
  extern "C" void __tsan_atomic##bits##_store(volatile type* a, type v, int) {                                \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                 \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_exchange(volatile type* a, type v, int) {                             \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_fetch_add(volatile type* a, type v, int) {                            \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                        \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_fetch_sub(volatile type* a, type v, int) {                            \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                        \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_fetch_and(volatile type* a, type v, int) {                            \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                        \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_fetch_or(volatile type* a, type v, int) {                             \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                         \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_fetch_xor(volatile type* a, type v, int) {                            \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                        \
  }                                                                                                           \
  extern "C" int __tsan_atomic##bits##_compare_exchange_strong(volatile type* a, type* c, type v, int, int) { \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                   \
  }                                                                                                           \
  extern "C" int __tsan_atomic##bits##_compare_exchange_weak(volatile type* a, type* c, type v, int, int) {   \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                    \
  }                                                                                                           \
  extern "C" type __tsan_atomic##bits##_compare_exchange_val(volatile type* a, type c, type v, int, int) {    \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                         \
    return c;                                                                                                 \
  }
KDOPS_SIM_RECORD_ATOMIC(8, unsigned char)
KDOPS_SIM_RECORD_ATOMIC(16, unsigned short)
KDOPS_SIM_RECORD_ATOMIC(32, unsigned int)
KDOPS_SIM_RECORD_ATOMIC(64, unsigned long long)
#undef KDOPS_SIM_RECORD_ATOMIC
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
// The rest of the instrumentation's calls: nothing to record (function boundaries, vtable pointers).
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}
#endif  // KDOPS_SIM_RECORD
