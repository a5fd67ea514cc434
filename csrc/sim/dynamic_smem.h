// The dynamic shared memory of a simulated block.
#pragma once

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "messages.h"

namespace kdops::sim::detail {

// A block's dynamic shared memory, filled with 0xFF so that reads before writes give the same
// wrong values in every run. Under ASan it has exactly the launch's size, so ASan reports the
// first access out of bounds with its thread and line; otherwise it lies between two canaries,
// checked when the block ends, so every simulated run catches writes just past either end.
class DynamicSmem {
 public:
#if defined(__SANITIZE_ADDRESS__)
  static constexpr size_t kCanary = 0;
#else
  static constexpr size_t kCanary = 256;  // a multiple of 16: the buffer stays 16-byte aligned
#endif
  static constexpr unsigned char kCanaryByte = 0xa5;

  explicit DynamicSmem(size_t bytes) : bytes_(bytes) {
    if (posix_memalign(&raw_, 16, bytes + 2 * kCanary) != 0) throw std::bad_alloc();
    unsigned char* raw = static_cast<unsigned char*>(raw_);
    std::memset(raw, kCanaryByte, kCanary);
    std::memset(raw + kCanary, 0xff, bytes);
    std::memset(raw + kCanary + bytes, kCanaryByte, kCanary);
  }
  ~DynamicSmem() { std::free(raw_); }
  DynamicSmem(const DynamicSmem&) = delete;
  DynamicSmem& operator=(const DynamicSmem&) = delete;

  void* data() const { return static_cast<unsigned char*>(raw_) + kCanary; }

  // "" if both canaries are intact, else which bytes outside the buffer were written.
  std::string damage() const {
    const unsigned char* raw = static_cast<const unsigned char*>(raw_);
    const unsigned char* after = raw + kCanary + bytes_;
    for (size_t i = 0; i < kCanary; ++i) {
      if (after[i] != kCanaryByte) {
        return format("byte %zu past the end of the %zu-byte buffer was written", i, bytes_);
      }
    }
    for (size_t i = kCanary; i-- > 0;) {
      if (raw[i] != kCanaryByte) return format("byte %zu before its start was written", kCanary - i);
    }
    return "";
  }

 private:
  size_t bytes_;
  void* raw_ = nullptr;
};

}  // namespace kdops::sim::detail
