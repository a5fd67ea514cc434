// Guarded host allocations for the simulated kernels (see guarded_heap.h).
#include "guarded_heap.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include "messages.h"

namespace kdops::sim {
namespace {

constexpr size_t kAlign = 64;  // torch's CPU alignment
constexpr unsigned char kPattern = 0xA5;

// The guard on each side: the buffer's own size (a wrong row or column bound overshoots by a
// fraction of it), at least 256 bytes and at most 16 KiB, a multiple of the alignment.
size_t guard_for(size_t bytes) {
  const size_t guard = bytes < 256 ? 256 : (bytes > 16384 ? 16384 : bytes);
  return (guard + kAlign - 1) / kAlign * kAlign;
}

struct Block {
  size_t size;   // what was asked for
  size_t guard;  // before the buffer, and at least that much after it
  size_t total;  // guards included
};

std::mutex mutex;
std::map<uintptr_t, Block>& live() {  // by the address handed out; never destroyed (freed after exit)
  static auto* blocks = new std::map<uintptr_t, Block>();
  return *blocks;
}

unsigned char* base_of(uintptr_t user, const Block& b) { return reinterpret_cast<unsigned char*>(user - b.guard); }

void fill_guards(unsigned char* base, const Block& b) {
  std::memset(base, kPattern, b.guard);
  std::memset(base + b.guard + b.size, kPattern, b.total - b.guard - b.size);
}

// The damaged guard byte nearest the buffer, as an offset from the buffer's start (negative:
// before it), or 0 if the guards are intact (0 is inside the buffer, never a guard).
long long first_damage(uintptr_t user, const Block& b) {
  const unsigned char* base = base_of(user, b);
  for (size_t i = b.guard + b.size; i < b.total; ++i) {
    if (base[i] != kPattern) return static_cast<long long>(i - b.guard);
  }
  for (size_t i = b.guard; i-- > 0;) {
    if (base[i] != kPattern) return static_cast<long long>(i) - static_cast<long long>(b.guard);
  }
  return 0;
}

}  // namespace

void* guarded_allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t guard = guard_for(bytes);
  const Block block{bytes, guard, guard + (bytes + kAlign - 1) / kAlign * kAlign + guard};
  auto* base = static_cast<unsigned char*>(std::aligned_alloc(kAlign, block.total));
  if (base == nullptr) throw std::bad_alloc();
  fill_guards(base, block);
  const uintptr_t user = reinterpret_cast<uintptr_t>(base + guard);
  std::lock_guard<std::mutex> lock(mutex);
  live().emplace(user, block);
  return base + guard;
}

void guarded_free(void* pointer) {
  if (pointer == nullptr) return;
  const uintptr_t user = reinterpret_cast<uintptr_t>(pointer);
  unsigned char* base;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = live().find(user);
    base = base_of(user, it->second);
    live().erase(it);
  }
  std::free(base);
}

namespace detail {

std::string damaged_guards(const void* params, size_t size) {
  std::string report;
  std::lock_guard<std::mutex> lock(mutex);
  const auto& blocks = live();
  if (blocks.empty()) return report;
  std::map<uintptr_t, const Block*> seen;
  for (size_t at = 0; at + sizeof(uintptr_t) <= size; at += alignof(uintptr_t)) {
    uintptr_t word;
    std::memcpy(&word, static_cast<const char*>(params) + at, sizeof word);
    auto it = blocks.upper_bound(word);  // the first buffer starting past the word
    if (it != blocks.end() && word + it->second.guard >= it->first) {  // in its leading guard
      seen.emplace(it->first, &it->second);
      continue;
    }
    if (it == blocks.begin()) continue;
    --it;
    if (word < it->first + it->second.size + it->second.guard) seen.emplace(it->first, &it->second);
  }
  for (const auto& [user, block] : seen) {
    const long long offset = first_damage(user, *block);
    if (offset == 0) continue;
    fill_guards(base_of(user, *block), *block);  // repaired: the next launch reports only its own writes
    report += format("%sa write %s the %zu-byte buffer at %p (its guard byte at offset %lld was overwritten)",
                     report.empty() ? "" : "; ", offset < 0 ? "before the start of" : "past the end of", block->size,
                     reinterpret_cast<void*>(user), offset);
  }
  return report;
}

bool in_guarded_allocation(const void* address) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = live().upper_bound(a);  // the first buffer starting past the address
  if (it == live().begin()) return false;
  --it;
  return a < it->first + it->second.size;
}

}  // namespace detail
}  // namespace kdops::sim
