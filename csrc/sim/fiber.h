// Fibers for the CUDA simulator: one per simulated CUDA thread, switched by hand-written
// assembly (no syscalls: glibc's swapcontext costs ~160 ns per switch for its sigprocmask, the
// direct switch ~10 ns). Stacks are mmap'd with a guard page below and pooled by the caller.
// Under AddressSanitizer and ThreadSanitizer every switch is announced to the sanitizer, or
// they report false stack overflows (ASan) or see one thread running on many stacks (TSan).
#pragma once

#include <cstddef>

namespace kdops::sim::fiber {

struct Stack {
  char* low = nullptr;  // lowest usable byte (the guard page lies below it)
  size_t size = 0;
};

// mmap'd stack of `size` usable bytes plus a PROT_NONE guard page; throws std::bad_alloc.
Stack allocate_stack(size_t size);
void free_stack(Stack& stack);

// A suspended execution. The OS thread's own context has no Stack (it is the thread's stack).
struct Context {
  void* sp = nullptr;
  Stack stack;
  void* asan_fake_stack = nullptr;  // ASan's fake stack of this context while suspended
  void* tsan_fiber = nullptr;       // TSan's state for this context (created by prepare)
};

// Makes `context` start entry(arg) on its stack when first switched to. `dirty`: the stack is new
// or was abandoned mid-run, so ASan's poisoning of all of it is cleared (else only of its top,
// where the frames of the last run that never returned lie).
void prepare(Context& context, void (*entry)(void*), void* arg, bool dirty);

// Binds `context` to the calling OS thread's current execution (its stack, its TSan state).
void adopt_current(Context& context);

// Suspends `from` (the running context) and resumes `to`.
void switch_to(Context& from, Context& to);

// Like switch_to, but `from` is never resumed (its stack may be reused or freed).
[[noreturn]] void exit_to(Context& from, Context& to);

// The first call in every fiber entry function: completes the switch that started it.
void on_start();

#if defined(__SANITIZE_THREAD__)
void destroy_tsan_fiber(Context& context);
#endif

}  // namespace kdops::sim::fiber
