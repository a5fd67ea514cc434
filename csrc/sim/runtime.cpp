// The CUDA simulator's execution engine.
//
// Model: every CUDA thread of a block is a fiber; a block's fibers share the launching OS thread
// and blocks run one after another (seeded shuffled order on request). A fiber runs until it
// reaches a synchronisation point (barrier, warp collective, exit), then hands the CPU directly
// to the next ready fiber, chosen by the launch's Schedule (runtime_api.h): ascending thread
// order by default, or seeded random, warp run-ahead, warp round-robin or PCT. Between
// synchronisation points execution is sequential, so a missing barrier shows up as results that
// change with the schedule.
//
// At each block's start its static __shared__ is poisoned with 0xFF bytes (static_shared.h), as
// its dynamic shared memory is (dynamic_smem.h).
//
// Memory between blocks: the cache-hinted loads and stores kernels use for data other blocks read
// go through GlobalMemory (global_memory.h), which the engine feeds with fences, atomics,
// barriers and launch boundaries; a load not ordered after another block's store by PTX's
// release/acquire patterns fails the launch.
//
// Blocks under ThreadSanitizer: nothing orders one block of a launch before another but what
// CUDA guarantees, so TSan sees the races between blocks that sequential execution hides. Each
// block's threads are other TSan fibers than the previous block's, its barriers use sync objects
// of its own, TSan forgets the accesses to the module's thread-local storage (static __shared__
// included) at its start, and the host orders launches, not blocks. A __threadfence followed by
// an atomic is a release on the atomic's address; an atomic followed by a __threadfence is an
// acquire from it (the PTX memory model's release and acquire patterns), so a cross-block
// protocol is clean only with both fences.
//
// Checks (each raises std::runtime_error from launch, naming kernel, block, thread and lines):
// threads waiting at different barriers (divergence), a thread exiting while others wait at a
// barrier, a collective whose mask omits the caller or names lanes that do not exist or have
// exited, lanes of one warp calling different collectives or passing different masks, a shuffle
// reading a lane outside its mask, a shuffle width that is not a power of two in [1, 32], and
// deadlock (no fiber can proceed), which names every waiting site.
//
// After an error the fibers still suspended are abandoned without unwinding (their stacks are
// reused for the next block), and the engine is ready for the next launch.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "device_state.h"
#include "dynamic_smem.h"
#include "faults.h"
#include "fiber.h"
#include "global_memory.h"
#include "guarded_heap.h"
#include "messages.h"
#include "runtime_api.h"
#include "static_shared.h"
#include "access_record.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace kdops::sim::detail {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kStackSize = 1024 * 1024;  // sanitizers' instrumentation grows frames
#else
constexpr size_t kStackSize = 256 * 1024;
#endif
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kTrackedAtomics = 8;  // addresses an acquiring __threadfence looks back at
// Sets of fibers (stack and TSan thread) that consecutive blocks alternate between. Under TSan, 2:
// the threads of consecutive blocks are then different TSan threads on different stacks, not
// ordered by program order. (Creating TSan fibers per block instead costs ~0.5 ms a thread.)
// Blocks an even number of places apart in the run order share TSan threads, so a race between
// two such blocks alone is missed; shuffled block orders change the pairs.
#if defined(__SANITIZE_THREAD__)
constexpr unsigned kFiberSets = 2;
#else
constexpr unsigned kFiberSets = 1;
#endif

// ThreadSanitizer sees each fiber as a thread. The runtime's own bookkeeping is shared by all
// fibers of a block without synchronisation (they never run at once), so it is hidden from TSan;
// the happens-before edges CUDA guarantees (block start and end, barriers, __syncwarp) are
// announced explicitly.
// Sections never nest: a fiber leaves for good (exit_to) from depth exactly 1, ending its section
// first, since TSan objects to a fiber destroyed inside one.
#if defined(__SANITIZE_THREAD__)
struct RuntimeSection {
  RuntimeSection() { __tsan_ignore_thread_begin(); }
  ~RuntimeSection() { __tsan_ignore_thread_end(); }
};
void end_section_for_good() { __tsan_ignore_thread_end(); }
void happens_before_release(void* object) { __tsan_release(object); }
void happens_before_acquire(void* object) { __tsan_acquire(object); }

#else
struct [[maybe_unused]] RuntimeSection {
  RuntimeSection() {}  // user-provided: no unused-variable warning
};
void end_section_for_good() {}
void happens_before_release(void*) {}
void happens_before_acquire(void*) {}
#endif

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

enum class Status : uint8_t { kReady, kRunning, kBarrier, kWarp, kDone };

struct Fiber {
  ThreadState state;  // first member: current_thread points here
  fiber::Context context;
  Status status = Status::kDone;
  bool stack_dirty = true;  // abandoned mid-run or never used: unpoison all of it before reuse
  bool started = false;     // has run in the current block
  unsigned linear = 0;
  Site site{nullptr, 0};  // where it waits
  // The lane's operands and result of the warp collective it is in.
  uint64_t in = 0, out = 0;
  int arg = 0, width = 0;
  void* data = nullptr;
  // For fence_point and atomic_point: whether the thread has fenced, so its atomics release, and
  // the addresses of its atomics since its last fence (with the stamp of the last one on each, in
  // GlobalMemory's order of events), which the next fence acquires from.
  bool fenced = false;
  int atomics = 0;
  const void* atomic_addresses[kTrackedAtomics] = {};
  uint64_t atomic_stamps[kTrackedAtomics] = {};

  ~Fiber() {
#if defined(__SANITIZE_THREAD__)
    fiber::destroy_tsan_fiber(context);
#endif
    fiber::free_stack(context.stack);
  }
};

Fiber& running_fiber() { return *reinterpret_cast<Fiber*>(current_thread); }

struct Pending {  // a warp collective waiting for lanes
  WarpOp op;
  const char* what;          // its name in messages
  WarpCompletion complete;   // warp_call's, else null
  Site site;
  unsigned mask, arrived;
  unsigned sync_parity;
};

struct Warp {
  unsigned existing = 0, exited = 0;
  unsigned ready = 0;  // lanes in the ready set (the warp-level schedules')
  std::vector<Pending> pending;
  unsigned sync_generation = 0;
  char* sync_objects = nullptr;  // 2 TSan happens-before objects of __syncwarp (the block's)
};

bool is_shuffle(WarpOp op) {
  return op == WarpOp::kShflIdx || op == WarpOp::kShflUp || op == WarpOp::kShflDown || op == WarpOp::kShflXor;
}

bool same_file(const char* a, const char* b) { return a == b || (a != nullptr && b != nullptr && std::strcmp(a, b) == 0); }

bool same_site(Site a, Site b) {
  return a.line == b.line && same_file(a.file, b.file) && a.caller_line == b.caller_line &&
         same_file(a.caller_file, b.caller_file);
}

// One per OS thread: the block being run and the fibers, kept between launches.
class Engine {
 public:
  ~Engine() {
    RuntimeSection section;  // fibers read their contexts after their last happens-before edge
    fibers_.clear();
  }

  void run(const Launch& launch);

  int barrier(BarrierKind kind, int predicate, Site site);
  uint64_t collective(WarpOp op, const char* what, WarpCompletion complete, unsigned mask, uint64_t value, int arg,
                      int width, void* data, Site site);
  unsigned active_mask();
  [[noreturn]] void fail(const std::string& message);
  [[noreturn]] void exit_thread();
  void fence();
  void atomic(const void* address);
  void weak_store(void* address, const void* value, size_t size, Site site);
  void weak_load(void* out, const void* address, size_t size, Site site);

 private:
  static void fiber_main(void* fiber);
  bool run_block(uint64_t block_linear, uint64_t seed);
  void push_ready(Fiber* fiber);
  Fiber* pop_ready();
  unsigned pick_warp();
  unsigned random_ready_warp();
  void start_schedule(uint64_t block_linear, uint64_t seed);
  void resume_next(Fiber& self);
  [[noreturn]] void fail_deadlock();
  void complete(unsigned warp_index, const Pending& pending);
  Fiber& block_fiber(unsigned t) { return *fibers_[fiber_base_ + t]; }
  Fiber& lane_fiber(unsigned warp_index, int lane) { return block_fiber(warp_index * 32 + lane); }
  Accessor accessor(const Fiber& fiber) const {
    return Accessor{block_linear_, fiber.linear, block_idx_, fiber.state.thread_idx};
  }
  std::string whereabouts(unsigned warp_index, int lane);

  std::vector<std::unique_ptr<Fiber>> fibers_;  // kFiberSets sets of threads_
  size_t fiber_base_ = 0;                        // the running block's set
  uint64_t blocks_run_ = 0;
  fiber::Context host_;
  const Launch* launch_ = nullptr;
  uint3 block_idx_{0, 0, 0};
  uint64_t block_linear_ = 0;
  GlobalMemory memory_;  // the launch's stores between blocks (global_memory.h)
  unsigned threads_ = 0, done_ = 0;
  Schedule schedule_ = Schedule::kInOrder;
  int pct_depth_ = 3;
  uint64_t rng_ = 0;
  // The ready set. kInOrder and kRandom: a ring of at most threads_ fibers, its size a power of
  // two (no division). The warp-level schedules: each warp's `ready` lanes.
  std::vector<Fiber*> ready_;
  size_t ready_mask_ = 0, ready_head_ = 0, ready_count_ = 0;
  unsigned last_warp_ = 0;                // the warp of the fiber picked last
  std::vector<unsigned> warp_order_;      // kRoundRobin: the warps' seeded cycle
  unsigned order_pos_ = 0;                // kRoundRobin: position of last_warp_ in it
  std::vector<int64_t> priority_;         // kPct: per warp, the highest runs
  std::vector<uint64_t> change_points_;   // kPct: picks (counted from 1) that demote the running warp
  uint64_t picks_ = 0;                    // kPct: picks so far in the block
  uint64_t picks_estimate_ = 0;           // kPct: k, the picks of the launch's previous block
  // TSan happens-before objects of the running block: 2 for its barriers, 2 per warp for
  // __syncwarp, 1 for its start. Fresh for every block, so no block is ordered after another.
  std::unique_ptr<char[]> block_sync_;
  char launch_end_sync_ = 0;  // every thread of a launch happens before the launch returns
  // the pending barrier
  unsigned waiting_ = 0;
  BarrierKind barrier_kind_ = BarrierKind::kSync;
  Site barrier_site_{nullptr, 0};
  Fiber* first_waiter_ = nullptr;
  int barrier_count_ = 0, barrier_result_ = 0;
  unsigned barrier_parity_ = 0;
  char* barrier_sync_ = nullptr;  // 2 of block_sync_, alternating per barrier
  char* block_start_sync_ = nullptr;
  std::vector<Warp> warps_;
  const Pending* completing_ = nullptr;  // the warp_call being completed
  std::string error_;
};

thread_local Engine engine;

bool ring_schedule(Schedule s) { return s == Schedule::kInOrder || s == Schedule::kRandom; }

void Engine::push_ready(Fiber* fiber) {
  fiber->status = Status::kReady;
  ++ready_count_;
  if (ring_schedule(schedule_)) {
    ready_[(ready_head_ + ready_count_ - 1) & ready_mask_] = fiber;
  } else {
    warps_[fiber->linear / 32].ready |= 1u << fiber->state.lane;
  }
}

// The seeded state of the block's schedule: the RNG, kRoundRobin's cycle, kPct's priorities and
// change points.
void Engine::start_schedule(uint64_t block_linear, uint64_t seed) {
  rng_ = seed ^ (block_linear * 0xd1b54a32d192ed03ull);
  const unsigned warps = static_cast<unsigned>(warps_.size());
  last_warp_ = static_cast<unsigned>(splitmix64(rng_) % warps);
  if (schedule_ == Schedule::kRoundRobin || schedule_ == Schedule::kPct) {
    warp_order_.resize(warps);
    for (unsigned w = 0; w < warps; ++w) warp_order_[w] = w;
    for (unsigned i = warps; i > 1; --i) std::swap(warp_order_[i - 1], warp_order_[splitmix64(rng_) % i]);
    order_pos_ = 0;
  }
  if (schedule_ == Schedule::kPct) {
    // Initial priorities pct_depth_ .. pct_depth_ + warps - 1 in a random order; the change
    // points demote to pct_depth_ - 1, pct_depth_ - 2, ..., below every initial one.
    priority_.resize(warps);
    for (unsigned i = 0; i < warps; ++i) priority_[warp_order_[i]] = pct_depth_ + i;
    const uint64_t k = picks_estimate_ > 0 ? picks_estimate_ : uint64_t{threads_} * 8;
    change_points_.clear();
    for (int i = 1; i < pct_depth_; ++i) change_points_.push_back(1 + splitmix64(rng_) % k);
    std::sort(change_points_.begin(), change_points_.end());
    picks_ = 0;
  }
}

unsigned Engine::random_ready_warp() {
  unsigned with_ready = 0;
  for (const Warp& w : warps_) with_ready += w.ready != 0;
  uint64_t nth = splitmix64(rng_) % with_ready;
  for (unsigned w = 0;; ++w) {
    if (warps_[w].ready != 0 && nth-- == 0) return w;
  }
}

// The warp whose lowest ready lane runs next (warp-level schedules; some warp has a ready lane).
unsigned Engine::pick_warp() {
  const unsigned warps = static_cast<unsigned>(warps_.size());
  switch (schedule_) {
    case Schedule::kRunAhead:
      return warps_[last_warp_].ready != 0 ? last_warp_ : random_ready_warp();
    case Schedule::kRoundRobin:
      for (unsigned step = 1;; ++step) {
        const unsigned pos = (order_pos_ + step) % warps;
        if (warps_[warp_order_[pos]].ready != 0) {
          order_pos_ = pos;
          return warp_order_[pos];
        }
      }
    case Schedule::kPct: {
      ++picks_;
      int64_t demoted = pct_depth_ - 1;
      for (const uint64_t point : change_points_) {
        if (point == picks_) priority_[last_warp_] = demoted;
        --demoted;
      }
      unsigned best = warps;
      for (unsigned w = 0; w < warps; ++w) {
        if (warps_[w].ready != 0 && (best == warps || priority_[w] > priority_[best])) best = w;
      }
      return best;
    }
    case Schedule::kInOrder:
    case Schedule::kRandom:
      break;
  }
  return 0;
}

Fiber* Engine::pop_ready() {
  --ready_count_;
  if (!ring_schedule(schedule_)) {
    const unsigned w = pick_warp();
    last_warp_ = w;
    const int lane = __builtin_ctz(warps_[w].ready);
    warps_[w].ready &= warps_[w].ready - 1;
    return &lane_fiber(w, lane);
  }
  if (schedule_ == Schedule::kRandom && ready_count_ > 0) {
    const size_t pick = (ready_head_ + splitmix64(rng_) % (ready_count_ + 1)) & ready_mask_;
    std::swap(ready_[ready_head_], ready_[pick]);
  }
  Fiber* fiber = ready_[ready_head_];
  ready_head_ = (ready_head_ + 1) & ready_mask_;
  return fiber;
}

// Hands the CPU to the next ready fiber; returns when `self` is resumed (at once if it is next).
void Engine::resume_next(Fiber& self) {
  if (ready_count_ == 0) fail_deadlock();
  Fiber* next = pop_ready();
  next->status = Status::kRunning;
  if (next == &self) return;
  current_thread = &next->state;
  fiber::switch_to(self.context, next->context);
}

void Engine::fiber_main(void* arg) {
  fiber::on_start();
  {
    RuntimeSection section;
    static_cast<Fiber*>(arg)->started = true;
  }
  happens_before_acquire(engine.block_start_sync_);
  try {
    engine.launch_->run(engine.launch_->state);
  } catch (const std::exception& e) {
    RuntimeSection section;
    engine.fail(std::string("the kernel threw an exception: ") + e.what());
  } catch (...) {
    RuntimeSection section;
    engine.fail("the kernel threw an exception");
  }
  RuntimeSection section;
  engine.exit_thread();
}

void Engine::exit_thread() {
  Fiber& self = running_fiber();
  const int lane = static_cast<int>(self.state.lane);
  Warp& warp = warps_[self.linear / 32];
  for (const Pending& p : warp.pending) {
    if ((p.mask >> lane) & 1) {
      fail(format("the thread exits while lanes %s of its warp wait for it at %s (%s) with mask 0x%08x",
                  lanes(p.arrived).c_str(), p.what, where(p.site).c_str(), p.mask));
    }
  }
  if (waiting_ > 0) {
    fail(format("the thread exits while %u thread(s) wait at %s (%s), e.g. thread %s: every thread of a block must "
                "reach every barrier",
                waiting_, barrier_name(barrier_kind_), where(barrier_site_).c_str(),
                triple(first_waiter_->state.thread_idx).c_str()));
  }
  self.state.async_copies.land_all();  // copies never waited for land, as on the hardware
  self.status = Status::kDone;
  warp.exited |= 1u << lane;
  ++done_;
  happens_before_release(&launch_end_sync_);
  if (ready_count_ == 0) {
    if (done_ < threads_) fail_deadlock();
    current_thread = nullptr;  // the block is done: back to the host
    end_section_for_good();
    fiber::exit_to(self.context, host_);
  }
  Fiber* next = pop_ready();
  next->status = Status::kRunning;
  current_thread = &next->state;
  end_section_for_good();
  fiber::exit_to(self.context, next->context);
}

void Engine::fail(const std::string& message) {
  if (current_thread == nullptr) throw std::runtime_error("kdops.sim: " + message);
  Fiber& self = running_fiber();
  self.status = Status::kDone;  // abandoned: its section is ended below
  self.stack_dirty = true;
  happens_before_release(&launch_end_sync_);
  const std::string at = completing_ != nullptr ? format(" (%s)", where(completing_->site).c_str()) : "";
  completing_ = nullptr;
  error_ = format("kdops.sim: %s%s\n  in kernel %s, block %s, thread %s (warp %u, lane %u)", message.c_str(),
                  at.c_str(), kernel_name(*launch_).c_str(), triple(block_idx_).c_str(), triple(self.state.thread_idx).c_str(),
                  self.linear / 32, self.state.lane);
  current_thread = nullptr;
  end_section_for_good();
  fiber::exit_to(self.context, host_);
}

std::string Engine::whereabouts(unsigned warp_index, int lane) {
  if (!((warps_[warp_index].existing >> lane) & 1)) return "does not exist";
  const Fiber& f = lane_fiber(warp_index, lane);
  switch (f.status) {
    case Status::kDone:
      return "has exited";
    case Status::kBarrier:
      return format("waits at %s (%s)", barrier_name(barrier_kind_), where(f.site).c_str());
    case Status::kWarp:
      return format("waits at a warp collective (%s)", where(f.site).c_str());
    case Status::kReady:
    case Status::kRunning:
      return "is runnable";
  }
  return "?";
}

void Engine::fail_deadlock() {
  std::string message = "deadlock: no thread of the block can proceed.";
  if (waiting_ > 0) {
    message += format("\n  %u thread(s) wait at %s (%s), e.g. thread %s", waiting_, barrier_name(barrier_kind_),
                      where(barrier_site_).c_str(), triple(first_waiter_->state.thread_idx).c_str());
  }
  int listed = 0, unlisted = 0;
  for (unsigned w = 0; w < warps_.size(); ++w) {
    for (const Pending& p : warps_[w].pending) {
      if (listed == 8) {
        ++unlisted;
        continue;
      }
      ++listed;
      const unsigned missing = p.mask & ~p.arrived;
      message += format("\n  warp %u: lanes %s wait at %s (%s) with mask 0x%08x; missing lanes %s", w,
                        lanes(p.arrived).c_str(), p.what, where(p.site).c_str(), p.mask, lanes(missing).c_str());
      const int first_missing = __builtin_ctz(missing);
      message += format(" (lane %d %s)", first_missing, whereabouts(w, first_missing).c_str());
    }
  }
  if (unlisted > 0) message += format("\n  and %d more waiting warp collectives", unlisted);
  fail(message);
}

int Engine::barrier(BarrierKind kind, int predicate, Site site) {
  Fiber& self = running_fiber();
  if (waiting_ == 0) {
    barrier_kind_ = kind;
    barrier_site_ = site;
    first_waiter_ = &self;
    barrier_count_ = 0;
  } else if (kind != barrier_kind_ || !same_site(site, barrier_site_)) {
    fail(format("barrier divergence: the thread reaches %s at %s while thread %s waits at %s at %s: every thread of "
                "a block must reach the same barrier",
                barrier_name(kind), where(site).c_str(), triple(first_waiter_->state.thread_idx).c_str(),
                barrier_name(barrier_kind_), where(barrier_site_).c_str()));
  }
  barrier_count_ += predicate != 0;
  ++waiting_;
  self.status = Status::kBarrier;
  self.site = site;
  const unsigned parity = barrier_parity_;
  happens_before_release(&barrier_sync_[parity]);
  if (waiting_ + done_ == threads_) {
    if (done_ > 0) {
      fail(format("%u thread(s) of the block exited while the others wait at %s (%s): every thread of a block must "
                  "reach every barrier",
                  done_, barrier_name(kind), where(site).c_str()));
    }
    switch (kind) {
      case BarrierKind::kSync:
        barrier_result_ = 0;
        break;
      case BarrierKind::kCount:
        barrier_result_ = barrier_count_;
        break;
      case BarrierKind::kAnd:
        barrier_result_ = barrier_count_ == static_cast<int>(threads_);
        break;
      case BarrierKind::kOr:
        barrier_result_ = barrier_count_ > 0;
        break;
    }
    waiting_ = 0;
    barrier_parity_ ^= 1;
    memory_.barrier(block_linear_);
    for (unsigned t = 0; t < threads_; ++t) push_ready(&block_fiber(t));
  }
  resume_next(self);
  happens_before_acquire(&barrier_sync_[parity]);
  return barrier_result_;  // no other barrier completes before every thread has read it
}

uint64_t Engine::collective(WarpOp op, const char* what, WarpCompletion complete_fn, unsigned mask, uint64_t value,
                            int arg, int width, void* data, Site site) {
  Fiber& self = running_fiber();
  const unsigned warp_index = self.linear / 32;
  Warp& warp = warps_[warp_index];
  const int lane = static_cast<int>(self.state.lane);
  const unsigned bit = 1u << lane;
  if (!(mask & bit)) {
    fail(format("%s at %s with mask 0x%08x, which omits the calling lane %d", what, where(site).c_str(), mask, lane));
  }
  if (mask & ~warp.existing) {
    fail(format("%s at %s with mask 0x%08x names lanes %s, which do not exist (the block has %u threads)", what,
                where(site).c_str(), mask, lanes(mask & ~warp.existing).c_str(), threads_));
  }
  if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1)) != 0)) {
    fail(format("%s at %s with width %d: the width must be a power of two in [1, 32]", what, where(site).c_str(),
                width));
  }
  if (mask & warp.exited) {
    fail(format("%s at %s with mask 0x%08x waits for lanes %s, which have exited", what, where(site).c_str(), mask,
                lanes(mask & warp.exited).c_str()));
  }
  Pending* pending = nullptr;
  for (Pending& p : warp.pending) {
    if (p.mask & bit) pending = &p;
  }
  if (pending != nullptr) {
    if (pending->mask != mask) {
      fail(format("%s at %s with mask 0x%08x, while lanes %s of the warp wait for this lane at %s (%s) with mask "
                  "0x%08x: the lanes of a collective must pass the same mask",
                  what, where(site).c_str(), mask, lanes(pending->arrived).c_str(), pending->what,
                  where(pending->site).c_str(), pending->mask));
    }
    if (pending->op != op || pending->complete != complete_fn ||
        (op != WarpOp::kSyncWarp && !same_site(pending->site, site))) {
      fail(format("%s at %s, while lanes %s of the warp wait at %s (%s) with the same mask 0x%08x: the lanes of a "
                  "warp must call the same collective",
                  what, where(site).c_str(), lanes(pending->arrived).c_str(), pending->what,
                  where(pending->site).c_str(), mask));
    }
  } else {
    warp.pending.push_back(Pending{op, what, complete_fn, site, mask, 0, (warp.sync_generation++) & 1});
    pending = &warp.pending.back();
  }
  self.in = value;
  self.arg = arg;
  self.width = width;
  self.data = data;
  pending->arrived |= bit;
  const unsigned parity = pending->sync_parity;
  if (op == WarpOp::kSyncWarp) happens_before_release(&warp.sync_objects[parity]);
  if (pending->arrived == mask) {
    const Pending done = *pending;
    warp.pending.erase(warp.pending.begin() + (pending - warp.pending.data()));
    complete(warp_index, done);
  } else {
    self.status = Status::kWarp;
    self.site = site;
    resume_next(self);
  }
  if (op == WarpOp::kSyncWarp) happens_before_acquire(&warp.sync_objects[parity]);
  return self.out;
}

// Runs in the last lane to arrive: computes every lane's result and wakes the others.
void Engine::complete(unsigned warp_index, const Pending& p) {
  const unsigned mask = p.mask;
  uint64_t all = 0;  // ballot bits / reduction over the mask
  if (p.op == WarpOp::kBallot) {
    for (int l = 0; l < 32; ++l) {
      if (((mask >> l) & 1) && lane_fiber(warp_index, l).in != 0) all |= 1ull << l;
    }
  } else if (p.op == WarpOp::kReduceAdd || p.op == WarpOp::kReduceMin || p.op == WarpOp::kReduceMax) {
    bool first = true;
    for (int l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1)) continue;
      const uint32_t v = static_cast<uint32_t>(lane_fiber(warp_index, l).in);
      if (first) {
        all = v;
        first = false;
      } else if (p.op == WarpOp::kReduceAdd) {
        all = static_cast<uint32_t>(all + v);
      } else if (p.op == WarpOp::kReduceMin) {
        all = v < all ? v : all;
      } else {
        all = v > all ? v : all;
      }
    }
  } else if (p.complete != nullptr) {
    void* lane_data[32];
    for (int l = 0; l < 32; ++l) lane_data[l] = lane_fiber(warp_index, l).data;
    completing_ = &p;  // errors raised by the completion name its site
#if defined(KDOPS_SIM_RECORD)
    // The completion runs in the last lane to arrive, for all 32: its accesses are not that lane's
    // (ldmatrix records each lane's row itself; WMMA's per-lane addresses are undocumented and
    // not counted).
    record::suppress(true);
#endif
    p.complete(lane_data);
#if defined(KDOPS_SIM_RECORD)
    record::suppress(false);
#endif
    completing_ = nullptr;
  }
  for (int l = 0; l < 32; ++l) {
    if (!((mask >> l) & 1)) continue;
    Fiber& f = lane_fiber(warp_index, l);
    if (is_shuffle(p.op)) {
      const int width = f.width;
      const int segment = l & ~(width - 1);
      int src = l;
      switch (p.op) {
        case WarpOp::kShflIdx:
          src = segment + (f.arg & (width - 1));
          break;
        case WarpOp::kShflUp:
          src = static_cast<unsigned>(f.arg) > static_cast<unsigned>(l - segment) ? l : l - f.arg;
          break;
        case WarpOp::kShflDown:
          src = static_cast<unsigned>(f.arg) >= static_cast<unsigned>(segment + width - l) ? l : l + f.arg;
          break;
        case WarpOp::kShflXor:  // PTX bfly: lanes of later segments (or past the warp) give the own value
          src = l ^ f.arg;
          if (src < 0 || src >= segment + width) src = l;
          break;
        default:
          break;
      }
      if (!((mask >> src) & 1)) {
        fail(format("lane %d's %s at %s reads lane %d, which is not in the mask 0x%08x (its value is undefined)", l,
                    p.what, where(p.site).c_str(), src, mask));
      }
      f.out = lane_fiber(warp_index, src).in;
    } else {
      f.out = all;
    }
  }
  Fiber& self = running_fiber();
  for (int l = 0; l < 32; ++l) {
    Fiber& f = lane_fiber(warp_index, l);
    if (((mask >> l) & 1) && &f != &self) push_ready(&f);
  }
}

unsigned Engine::active_mask() {
  const Fiber& self = running_fiber();
  const Warp& warp = warps_[self.linear / 32];
  return warp.existing & ~warp.exited;
}

// A __threadfence: an acquire from the addresses of the thread's atomics since its last fence,
// and a release for its next atomics (the PTX patterns atomic-then-fence and fence-then-atomic).
void Engine::fence() {
  Fiber& self = running_fiber();
  const Accessor who = accessor(self);
  const int tracked = self.atomics < kTrackedAtomics ? self.atomics : kTrackedAtomics;
  for (int i = 0; i < tracked; ++i) {
    happens_before_acquire(const_cast<void*>(self.atomic_addresses[i]));
    memory_.acquire(who, self.atomic_addresses[i], self.atomic_stamps[i]);
  }
  memory_.fence(who);
  self.atomics = 0;
  self.fenced = true;
}

void Engine::atomic(const void* address) {
  Fiber& self = running_fiber();
  const uint64_t stamp = memory_.atomic(accessor(self), address);
  if (self.fenced) happens_before_release(const_cast<void*>(address));
  for (int i = 0; i < self.atomics && i < kTrackedAtomics; ++i) {
    if (self.atomic_addresses[i] == address) {
      self.atomic_stamps[i] = stamp;  // a later atomic reads later in the address's order
      return;
    }
  }
  const int slot = self.atomics++ % kTrackedAtomics;
  self.atomic_addresses[slot] = address;
  self.atomic_stamps[slot] = stamp;
}

void Engine::weak_store(void* address, const void* value, size_t size, Site site) {
  memory_.store(address, size, accessor(running_fiber()), site);
  std::memcpy(address, value, size);
}

void Engine::weak_load(void* out, const void* address, size_t size, Site site) {
  const std::string race = memory_.load(address, size, accessor(running_fiber()), site);
  if (!race.empty()) fail(race);
  std::memcpy(out, address, size);
}

bool Engine::run_block(uint64_t block_linear, uint64_t seed) {
  const dim3 grid = launch_->grid, block = launch_->block;
  block_linear_ = block_linear;
  block_idx_ = uint3{static_cast<unsigned>(block_linear % grid.x), static_cast<unsigned>(block_linear / grid.x % grid.y),
                     static_cast<unsigned>(block_linear / grid.x / grid.y)};
  const DynamicSmem smem(launch_->dynamic_smem_bytes);

  done_ = 0;
  waiting_ = 0;
  ready_head_ = ready_count_ = 0;
  fiber_base_ = (blocks_run_++ % kFiberSets) * threads_;
  block_sync_ = std::make_unique<char[]>(3 + 2 * warps_.size());
  barrier_sync_ = block_sync_.get();
  block_start_sync_ = block_sync_.get() + 2;
  for (unsigned w = 0; w < warps_.size(); ++w) {
    const unsigned lanes_here = threads_ - w * 32 < 32 ? threads_ - w * 32 : 32;
    warps_[w].existing = lanes_here == 32 ? kFullMask : (1u << lanes_here) - 1;
    warps_[w].exited = 0;
    warps_[w].ready = 0;
    warps_[w].pending.clear();
    warps_[w].sync_objects = block_sync_.get() + 3 + 2 * w;
  }
  start_schedule(block_linear, seed);
  poison_static_shared();
  forget_static_shared_accesses();
  for (unsigned t = 0; t < threads_; ++t) {
    Fiber& f = block_fiber(t);
    f.linear = t;
    f.state.thread_idx = uint3{t % block.x, t / block.x % block.y, t / block.x / block.y};
    f.state.block_idx = block_idx_;
    f.state.block_dim = block;
    f.state.grid_dim = grid;
    f.state.dynamic_smem = smem.data();
    f.state.lane = t % 32;
    f.state.async_copies.reset();
    f.started = false;
    f.fenced = false;
    f.atomics = 0;
    if (f.context.stack.low == nullptr) f.context.stack = fiber::allocate_stack(kStackSize);
    fiber::prepare(f.context, &Engine::fiber_main, &f, f.stack_dirty);
    f.stack_dirty = false;
    push_ready(&f);
  }
  happens_before_release(block_start_sync_);
  Fiber* first = pop_ready();
  first->status = Status::kRunning;
  current_thread = &first->state;
  fiber::switch_to(host_, first->context);
  // Back on the host: the block finished or failed.
  current_thread = nullptr;
  if (schedule_ == Schedule::kPct) picks_estimate_ = picks_;
  if (error_.empty()) {
    const std::string damage = smem.damage();
    if (damage.empty()) return true;
    error_ = format("kdops.sim: out-of-bounds write to dynamic shared memory: %s (the launch asked for %zu bytes; "
                    "the AddressSanitizer build names the thread and line)\n  in kernel %s, block %s",
                    damage.c_str(), launch_->dynamic_smem_bytes, kernel_name(*launch_).c_str(),
                    triple(block_idx_).c_str());
    return false;
  }
  for (unsigned t = 0; t < threads_; ++t) {  // abandon the suspended fibers without unwinding
    Fiber& f = block_fiber(t);
    if (f.status != Status::kDone && f.started) {
      f.stack_dirty = true;
#if defined(__SANITIZE_THREAD__)
      // It is suspended inside a runtime section: end it on its behalf (TSan's current fiber is
      // what the call applies to; no stack is switched).
      __tsan_switch_to_fiber(f.context.tsan_fiber, __tsan_switch_to_fiber_no_sync);
      __tsan_ignore_thread_end();
      happens_before_release(&launch_end_sync_);  // what it did precedes the next launch
      __tsan_switch_to_fiber(host_.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
    }
  }
  return false;
}

void Engine::run(const Launch& launch) {
  const DeviceProperties props = device();
  check_configuration(launch, props);
  catch_kernel_faults();
  const dim3 g = launch.grid, b = launch.block;
  const uint64_t block_threads = uint64_t{b.x} * b.y * b.z;
  launch_ = &launch;
  threads_ = static_cast<unsigned>(block_threads);
  while (fibers_.size() < kFiberSets * threads_) fibers_.push_back(std::make_unique<Fiber>());
  size_t ring = 1;
  while (ring < threads_) ring *= 2;
  ready_.assign(ring, nullptr);
  ready_mask_ = ring - 1;
  warps_.resize((threads_ + 31) / 32);
  error_.clear();
  memory_.clear();
  fiber::adopt_current(host_);
#if defined(KDOPS_SIM_RECORD)
  record::begin_launch(kernel_name(launch).c_str(), launch.dynamic_smem_bytes);
#endif

  const Options opts = options();
  schedule_ = opts.threads;
  pct_depth_ = opts.pct_depth;
  picks_estimate_ = 0;
  const uint64_t blocks = uint64_t{g.x} * g.y * g.z;
  std::vector<uint64_t> order;
  if (opts.shuffle_blocks) {
    order.resize(blocks);
    for (uint64_t i = 0; i < blocks; ++i) order[i] = i;
    uint64_t state = opts.seed ^ 0x5851f42d4c957f2dull;
    for (uint64_t i = blocks; i > 1; --i) std::swap(order[i - 1], order[splitmix64(state) % i]);
  }
  for (uint64_t i = 0; i < blocks; ++i) {
    if (!run_block(opts.shuffle_blocks ? order[i] : i, opts.seed)) {
      happens_before_acquire(&launch_end_sync_);
      memory_.clear();
      launch_ = nullptr;
      throw std::runtime_error(error_);
    }
#if defined(KDOPS_SIM_RECORD)
    record::end_block();
#endif
  }
  happens_before_acquire(&launch_end_sync_);  // the launch returns after all its blocks, not before
  memory_.clear();                            // and its stores are visible to the next launch
  launch_ = nullptr;
  const std::string damage = damaged_guards(launch.state, launch.state_size);
  if (!damage.empty()) {
    throw std::runtime_error(format("kdops.sim: out-of-bounds write to global memory: %s (the AddressSanitizer "
                                    "build names the thread and line)\n  in kernel %s",
                                    damage.c_str(), kernel_name(launch).c_str()));
  }
}

// The calls below are the runtime's entry points from kernel code.
void require_kernel(const char* what) {
  if (current_thread == nullptr) {
    throw std::runtime_error(std::string("kdops.sim: ") + what + " called outside a kernel launch");
  }
}

}  // namespace

int barrier(BarrierKind kind, int predicate, Site site) {
  require_kernel(barrier_name(kind));
  RuntimeSection section;
  return engine.barrier(kind, predicate, site);
}

uint64_t warp_op(WarpOp op, unsigned int mask, uint64_t value, int arg, int width, Site site) {
  require_kernel(warp_op_name(op));
  RuntimeSection section;
  return engine.collective(op, warp_op_name(op), nullptr, mask, value, arg, width, nullptr, site);
}

void warp_call(const char* what, void* data, WarpCompletion complete, Site site) {
  require_kernel(what);
  RuntimeSection section;
  engine.collective(WarpOp::kCall, what, complete, kFullMask, 0, 0, 32, data, site);
}

void fence_point() {
  if (current_thread == nullptr) return;
  RuntimeSection section;
  engine.fence();
}

void atomic_point(const void* address) {
  if (current_thread == nullptr) return;
  RuntimeSection section;
  engine.atomic(address);
}

void weak_store(void* address, const void* value, size_t size, Site site) {
  if (current_thread == nullptr) {
    std::memcpy(address, value, size);
    return;
  }
  RuntimeSection section;
  engine.weak_store(address, value, size, site);
}

void weak_load(void* out, const void* address, size_t size, Site site) {
  if (current_thread == nullptr) {
    std::memcpy(out, address, size);
    return;
  }
  RuntimeSection section;
  engine.weak_load(out, address, size, site);
}

void fail(const char* message) {  // called inside a warp_call's completion: already in a section
  engine.fail(message);
}

std::atomic<uint64_t> launches{0};

void launch(const Launch& launch) {
  RuntimeSection section;
  launches.fetch_add(1, std::memory_order_relaxed);
  if (current_thread != nullptr) engine.fail("a kernel launched another kernel (device-side launches are not simulated)");
  engine.run(launch);
}

}  // namespace kdops::sim::detail

uint64_t kdops::sim::launch_count() { return detail::launches.load(std::memory_order_relaxed); }

unsigned __activemask() {
  kdops::sim::detail::require_kernel("__activemask");
  kdops::sim::detail::RuntimeSection section;
  return kdops::sim::detail::engine.active_mask();
}
