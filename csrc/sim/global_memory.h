// CUDA's memory model between blocks, checked at the accesses kernels use for data that other
// blocks read within the same launch: the cache-hinted stores (__stcg, __stcs, __stwb, __stwt)
// and loads (__ldcg, __ldcs, __ldcv, __ldlu), which intrinsics.h routes through runtime.cpp's
// weak_store / weak_load. runtime.cpp feeds it the events that order blocks: fences, atomics,
// barriers, launch boundaries.
//
// A store of one block becomes visible to another only along the PTX memory model's
// release/acquire patterns (PTX ISA, "Memory Consistency Model"):
//   writer: store; __threadfence(); atomic on address A          (release through A)
//   reader: atomic on A that comes after it; __threadfence(); load (acquire from A)
// A fence is cumulative over what its thread has observed: other threads' stores of the block
// made before a __syncthreads that precedes the fence are released too, and an acquire by one
// thread covers its block's threads after a later __syncthreads. A load of memory that another
// block stored in this launch, not ordered so, is a data race under the model, whose value may
// be the one from before the store: the launch fails with a message naming both accesses and
// the missing half of the pattern. This is decided by the order of events alone, not by which
// value a load happened to read, so it does not depend on the run's schedule; stores become
// visible to every block at the launch's end (launches on a stream are ordered).
//
// Not modelled (see docs/simulator.md): plain and volatile accesses (not hookable without
// compiler instrumentation; the ThreadSanitizer lane checks their ordering between blocks),
// blocks running at once (blocks run one after another: a kernel that waits for another block
// deadlocks here), and stores of a block read by its own threads (ordered by barriers: the
// schedules and TSan check those).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime_api.h"

namespace kdops::sim::detail {

// Who makes an access: the running thread's block and thread (linear indices, and as CUDA
// names them, for messages).
struct Accessor {
  uint64_t block;
  unsigned thread;
  uint3 block_idx, thread_idx;
};

// The model's state for one launch (runtime.cpp's Engine holds one; the entry points
// kdops::sim::detail::weak_store / weak_load in runtime_api.h reach it).
class GlobalMemory {
 public:
  // A store of `size` bytes at `address` (recorded before the bytes are written).
  void store(const void* address, size_t size, const Accessor& who, Site site);
  // Empty if the model orders the load after every store of another block to the bytes it
  // reads, else why not (the launch's error message).
  std::string load(const void* address, size_t size, const Accessor& who, Site site) const;
  void fence(const Accessor& who);
  // An atomic of `who` on `address`: releases what `who` fenced; returns its stamp (its place in
  // the launch's order of events), which an acquiring fence passes to acquire().
  uint64_t atomic(const Accessor& who, const void* address);
  // A fence of `who` after its atomic on `address` at `atomic_stamp`: acquires what was released
  // through `address` before that atomic.
  void acquire(const Accessor& who, const void* address, uint64_t atomic_stamp);
  void barrier(uint64_t block);  // a __syncthreads of `block` completed
  void clear();                  // a launch starts or ends: every store is visible

 private:
  enum class State : uint8_t { kBuffered, kFenced, kReleased };
  struct Acquire {
    uint64_t block;
    unsigned thread;
    uint64_t stamp;
  };
  struct Store {
    uintptr_t begin, end;
    Accessor writer;
    uint64_t stamp;
    Site site;
    State state = State::kBuffered;
    unsigned fencer = 0;  // the thread of the writer's block whose fence covers it
    const void* release_address = nullptr;
    uint64_t release_stamp = 0;
    std::vector<Acquire> acquired;  // threads that acquired it (their blocks after a barrier)
  };
  bool visible(const Store& store, const Accessor& who) const;

  uint64_t clock_ = 0;
  uint64_t barrier_block_ = ~uint64_t{0};  // the block of the last completed barrier, and when
  uint64_t barrier_stamp_ = 0;
  std::vector<Store> stores_;
  std::multimap<uintptr_t, size_t> by_begin_;  // stores_ by first byte
};

}  // namespace kdops::sim::detail
