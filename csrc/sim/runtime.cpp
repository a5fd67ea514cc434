// The CUDA simulator's execution engine.
//
// Model: every CUDA thread of a block is a fiber; a block's fibers share the launching OS thread
// and blocks run one after another (seeded shuffled order on request). A fiber runs until it
// reaches a synchronisation point (barrier, warp collective, exit), then hands the CPU directly
// to the next ready fiber: ascending thread order by default, a seeded random ready fiber at every
// switch on request. Between synchronisation points execution is sequential, so a missing barrier
// shows up as results that change with the thread order.
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
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "device_state.h"
#include "dynamic_smem.h"
#include "fiber.h"
#include "messages.h"
#include "runtime_api.h"

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
  std::vector<Pending> pending;
  unsigned sync_generation = 0;
  char sync_objects[2] = {};  // TSan happens-before objects of __syncwarp
};

bool is_shuffle(WarpOp op) {
  return op == WarpOp::kShflIdx || op == WarpOp::kShflUp || op == WarpOp::kShflDown || op == WarpOp::kShflXor;
}

bool same_site(Site a, Site b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
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

 private:
  static void fiber_main(void* fiber);
  bool run_block(uint64_t block_linear, uint64_t seed);
  void push_ready(Fiber* fiber);
  Fiber* pop_ready();
  void resume_next(Fiber& self);
  [[noreturn]] void fail_deadlock();
  void complete(unsigned warp_index, const Pending& pending);
  Fiber& lane_fiber(unsigned warp_index, int lane) { return *fibers_[warp_index * 32 + lane]; }
  std::string whereabouts(unsigned warp_index, int lane);

  std::vector<std::unique_ptr<Fiber>> fibers_;
  fiber::Context host_;
  const Launch* launch_ = nullptr;
  uint3 block_idx_{0, 0, 0};
  unsigned threads_ = 0, done_ = 0;
  bool shuffle_threads_ = false;
  uint64_t rng_ = 0;
  // ready queue: a ring of at most threads_ fibers, its size a power of two (no division)
  std::vector<Fiber*> ready_;
  size_t ready_mask_ = 0, ready_head_ = 0, ready_count_ = 0;
  // the pending barrier
  unsigned waiting_ = 0;
  BarrierKind barrier_kind_ = BarrierKind::kSync;
  Site barrier_site_{nullptr, 0};
  Fiber* first_waiter_ = nullptr;
  int barrier_count_ = 0, barrier_result_ = 0;
  unsigned barrier_parity_ = 0;
  char barrier_sync_[2] = {};  // TSan happens-before objects, alternating per barrier
  char block_start_sync_ = 0, block_end_sync_ = 0;
  std::vector<Warp> warps_;
  const Pending* completing_ = nullptr;  // the warp_call being completed
  std::string error_;
};

thread_local Engine engine;

void Engine::push_ready(Fiber* fiber) {
  fiber->status = Status::kReady;
  ready_[(ready_head_ + ready_count_) & ready_mask_] = fiber;
  ++ready_count_;
}

Fiber* Engine::pop_ready() {
  if (shuffle_threads_ && ready_count_ > 1) {
    const size_t pick = (ready_head_ + splitmix64(rng_) % ready_count_) & ready_mask_;
    std::swap(ready_[ready_head_], ready_[pick]);
  }
  Fiber* fiber = ready_[ready_head_];
  ready_head_ = (ready_head_ + 1) & ready_mask_;
  --ready_count_;
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
  static_cast<Fiber*>(arg)->started = true;
  happens_before_acquire(&engine.block_start_sync_);
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
  happens_before_release(&block_end_sync_);
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
  happens_before_release(&block_end_sync_);
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
    for (unsigned t = 0; t < threads_; ++t) push_ready(fibers_[t].get());
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
    p.complete(lane_data);
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

bool Engine::run_block(uint64_t block_linear, uint64_t seed) {
  const dim3 grid = launch_->grid, block = launch_->block;
  block_idx_ = uint3{static_cast<unsigned>(block_linear % grid.x), static_cast<unsigned>(block_linear / grid.x % grid.y),
                     static_cast<unsigned>(block_linear / grid.x / grid.y)};
  const DynamicSmem smem(launch_->dynamic_smem_bytes);

  done_ = 0;
  waiting_ = 0;
  ready_head_ = ready_count_ = 0;
  for (unsigned w = 0; w < warps_.size(); ++w) {
    const unsigned lanes_here = threads_ - w * 32 < 32 ? threads_ - w * 32 : 32;
    warps_[w].existing = lanes_here == 32 ? kFullMask : (1u << lanes_here) - 1;
    warps_[w].exited = 0;
    warps_[w].pending.clear();
  }
  rng_ = seed ^ (block_linear * 0xd1b54a32d192ed03ull);
  for (unsigned t = 0; t < threads_; ++t) {
    Fiber& f = *fibers_[t];
    f.linear = t;
    f.state.thread_idx = uint3{t % block.x, t / block.x % block.y, t / block.x / block.y};
    f.state.block_idx = block_idx_;
    f.state.block_dim = block;
    f.state.grid_dim = grid;
    f.state.dynamic_smem = smem.data();
    f.state.lane = t % 32;
    f.state.async_copies.reset();
    f.started = false;
    if (f.context.stack.low == nullptr) f.context.stack = fiber::allocate_stack(kStackSize);
    fiber::prepare(f.context, &Engine::fiber_main, &f, f.stack_dirty);
    f.stack_dirty = false;
    push_ready(&f);
  }
  happens_before_release(&block_start_sync_);
  Fiber* first = pop_ready();
  first->status = Status::kRunning;
  current_thread = &first->state;
  fiber::switch_to(host_, first->context);
  // Back on the host: the block finished or failed.
  current_thread = nullptr;
  if (error_.empty()) {
    happens_before_acquire(&block_end_sync_);
    const std::string damage = smem.damage();
    if (damage.empty()) return true;
    error_ = format("kdops.sim: out-of-bounds write to dynamic shared memory: %s (the launch asked for %zu bytes; "
                    "the AddressSanitizer build names the thread and line)\n  in kernel %s, block %s",
                    damage.c_str(), launch_->dynamic_smem_bytes, kernel_name(*launch_).c_str(),
                    triple(block_idx_).c_str());
    return false;
  }
  for (unsigned t = 0; t < threads_; ++t) {  // abandon the suspended fibers without unwinding
    Fiber& f = *fibers_[t];
    if (f.status != Status::kDone && f.started) {
      f.stack_dirty = true;
#if defined(__SANITIZE_THREAD__)
      // It is suspended inside a runtime section: end it on its behalf (TSan's current fiber is
      // what the call applies to; no stack is switched).
      __tsan_switch_to_fiber(f.context.tsan_fiber, __tsan_switch_to_fiber_no_sync);
      __tsan_ignore_thread_end();
      happens_before_release(&block_end_sync_);  // what it did precedes the next launch
      __tsan_switch_to_fiber(host_.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
    }
  }
  happens_before_acquire(&block_end_sync_);
  return false;
}

void Engine::run(const Launch& launch) {
  const DeviceProperties props = device();
  check_configuration(launch, props);
  const dim3 g = launch.grid, b = launch.block;
  const uint64_t block_threads = uint64_t{b.x} * b.y * b.z;
  launch_ = &launch;
  threads_ = static_cast<unsigned>(block_threads);
  while (fibers_.size() < threads_) fibers_.push_back(std::make_unique<Fiber>());
  size_t ring = 1;
  while (ring < threads_) ring *= 2;
  ready_.assign(ring, nullptr);
  ready_mask_ = ring - 1;
  warps_.resize((threads_ + 31) / 32);
  error_.clear();
  fiber::adopt_current(host_);

  const Options opts = options();
  shuffle_threads_ = opts.shuffle_threads;
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
      launch_ = nullptr;
      throw std::runtime_error(error_);
    }
  }
  launch_ = nullptr;
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
