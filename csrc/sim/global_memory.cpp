// CUDA's memory model between blocks (see global_memory.h).
#include "global_memory.h"

#include "messages.h"

namespace kdops::sim::detail {

namespace {
constexpr uintptr_t kWidestAccess = 16;  // a float4 / int4 / double2
}  // namespace

void GlobalMemory::store(const void* address, size_t size, const Accessor& who, Site site) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address);
  by_begin_.emplace(begin, stores_.size());
  stores_.push_back(Store{begin, begin + size, who, ++clock_, site});
}

// A store covered by a fence of `who`: its own earlier stores, and those of its block's other
// threads made before the block's last completed barrier (the fence is cumulative over them).
void GlobalMemory::fence(const Accessor& who) {
  const uint64_t now = ++clock_;
  for (Store& s : stores_) {
    if (s.state != State::kBuffered || s.writer.block != who.block) continue;
    const bool observed = s.writer.thread == who.thread ? s.stamp < now
                                                        : barrier_block_ == who.block && s.stamp < barrier_stamp_;
    if (observed) {
      s.state = State::kFenced;
      s.fencer = who.thread;
    }
  }
}

uint64_t GlobalMemory::atomic(const Accessor& who, const void* address) {
  const uint64_t now = ++clock_;
  for (Store& s : stores_) {
    if (s.state == State::kFenced && s.writer.block == who.block && s.fencer == who.thread) {
      s.state = State::kReleased;
      s.release_address = address;
      s.release_stamp = now;
    }
  }
  return now;
}

void GlobalMemory::acquire(const Accessor& who, const void* address, uint64_t atomic_stamp) {
  const uint64_t now = ++clock_;
  for (Store& s : stores_) {
    if (s.state == State::kReleased && s.release_address == address && s.release_stamp < atomic_stamp) {
      s.acquired.push_back(Acquire{who.block, who.thread, now});
    }
  }
}

void GlobalMemory::barrier(uint64_t block) {
  barrier_block_ = block;
  barrier_stamp_ = ++clock_;
}

void GlobalMemory::clear() {
  stores_.clear();
  by_begin_.clear();
  barrier_block_ = ~uint64_t{0};
}

bool GlobalMemory::visible(const Store& s, const Accessor& who) const {
  if (s.writer.block == who.block) return true;  // within a block, barriers order accesses
  for (const Acquire& a : s.acquired) {
    if (a.block != who.block) continue;
    if (a.thread == who.thread || (barrier_block_ == who.block && a.stamp < barrier_stamp_)) return true;
  }
  return false;
}

std::string GlobalMemory::load(const void* address, size_t size, const Accessor& who, Site site) const {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address), end = begin + size;
  const uintptr_t from = begin >= kWidestAccess ? begin - kWidestAccess + 1 : 0;
  for (auto it = by_begin_.lower_bound(from); it != by_begin_.end() && it->first < end; ++it) {
    const Store& s = stores_[it->second];
    if (s.end <= begin || visible(s, who)) continue;
    const char* missing = nullptr;
    switch (s.state) {
      case State::kBuffered:
        missing = "the writing thread did not __threadfence() between the store and an atomic (the release half)";
        break;
      case State::kFenced:
        missing = "the writing thread fenced after the store, but made no atomic after the fence for the reader "
                  "to synchronise with (the release half)";
        break;
      case State::kReleased:
        missing = "the writer released it with an atomic, but the reading thread did not make an atomic on the "
                  "same address followed by __threadfence() before the load (the acquire half), nor did a thread "
                  "of its block that then reached a __syncthreads with it";
        break;
    }
    return format("a load (%s) reads %zu bytes at %p that block %s, thread %s stored (%s) in this launch without "
                  "the ordering CUDA requires between blocks: %s. Under the PTX memory model this is a data race; the "
                  "load may return the bytes from before the store",
                  where(site).c_str(), size, address, triple(s.writer.block_idx).c_str(),
                  triple(s.writer.thread_idx).c_str(), where(s.site).c_str(), missing);
  }
  return {};
}

}  // namespace kdops::sim::detail
