// Context switch, stacks and sanitizer annotations for the simulator's fibers (see fiber.h).
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#if !defined(__x86_64__)
#error "the CUDA simulator's context switch is written for x86-64 (System V ABI)"
#endif

extern "C" {
// kdops_sim_switch(void** save_sp, void* load_sp): saves the callee-saved registers, MXCSR and
// the x87 control word on the current stack, stores the stack pointer in *save_sp, loads
// load_sp and restores the same from there. Everything else is caller-saved in the SysV ABI.
void kdops_sim_switch(void** save_sp, void* load_sp);
// First code a new fiber runs: calls r13(r12) on an aligned stack; that call never returns.
void kdops_sim_trampoline();
}

asm(R"(
  .text
  .globl kdops_sim_switch
  .hidden kdops_sim_switch
  .type kdops_sim_switch, @function
  .p2align 4
kdops_sim_switch:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size kdops_sim_switch, .-kdops_sim_switch

  .globl kdops_sim_trampoline
  .hidden kdops_sim_trampoline
  .type kdops_sim_trampoline, @function
  .p2align 4
kdops_sim_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size kdops_sim_trampoline, .-kdops_sim_trampoline
)");

namespace kdops::sim::fiber {
namespace {

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

#if defined(__SANITIZE_ADDRESS__)
// The context being left by the switch in progress on this OS thread: the resumed side learns
// the bounds of the OS thread's own stack from ASan when it was the one left.
thread_local Context* switching_from = nullptr;
thread_local const void* thread_stack_bottom = nullptr;
thread_local size_t thread_stack_size = 0;

void announce_switch(Context* from_or_null, Context& from, Context& to) {
  switching_from = &from;
  const void* bottom = to.stack.low != nullptr ? static_cast<const void*>(to.stack.low) : thread_stack_bottom;
  const size_t size = to.stack.low != nullptr ? to.stack.size : thread_stack_size;
  __sanitizer_start_switch_fiber(from_or_null != nullptr ? &from_or_null->asan_fake_stack : nullptr, bottom,
                                 size);
}

void complete_switch(void* fake_stack) {
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(fake_stack, &bottom, &size);
  if (switching_from != nullptr && switching_from->stack.low == nullptr) {
    thread_stack_bottom = bottom;
    thread_stack_size = size;
  }
}
#endif

}  // namespace

Stack allocate_stack(size_t size) {
  const size_t page = page_size();
  size = (size + page - 1) / page * page;
  void* mem = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();
  mprotect(mem, page, PROT_NONE);  // guard page: an overflowing fiber faults instead of corrupting
  return Stack{static_cast<char*>(mem) + page, size};
}

void free_stack(Stack& stack) {
  if (stack.low == nullptr) return;
  munmap(stack.low - page_size(), stack.size + page_size());
  stack = Stack{};
}

void prepare(Context& context, void (*entry)(void*), void* arg, bool dirty) {
#if defined(__SANITIZE_ADDRESS__)
  constexpr size_t kTop = 32 * 1024;
  const size_t clear = dirty || context.stack.size < kTop ? context.stack.size : kTop;
  __asan_unpoison_memory_region(context.stack.low + context.stack.size - clear, clear);
#else
  (void)dirty;
#endif
#if defined(__SANITIZE_THREAD__)
  if (context.tsan_fiber == nullptr) context.tsan_fiber = __tsan_create_fiber(0);
#endif
  // Initial frame as kdops_sim_switch leaves it: [mxcsr, fcw][r15 r14 r13 r12 rbx rbp][ret].
  // The trampoline then starts with rsp = top, 16-byte aligned, as a call requires.
  const uintptr_t top = (reinterpret_cast<uintptr_t>(context.stack.low) + context.stack.size - 64) & ~uintptr_t{15};
  uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 8;
  const uint32_t mxcsr = 0x1f80;  // round to nearest, all exceptions masked, denormals kept (as CUDA)
  const uint32_t fcw = 0x037f;
  frame[0] = mxcsr | (uint64_t{fcw} << 32);
  frame[1] = 0;                                        // r15
  frame[2] = 0;                                        // r14
  frame[3] = reinterpret_cast<uint64_t>(entry);        // r13
  frame[4] = reinterpret_cast<uint64_t>(arg);          // r12
  frame[5] = 0;                                        // rbx
  frame[6] = 0;                                        // rbp
  frame[7] = reinterpret_cast<uint64_t>(&kdops_sim_trampoline);
  context.sp = frame;
  context.asan_fake_stack = nullptr;
}

void adopt_current(Context& context) {
  context.stack = Stack{};
#if defined(__SANITIZE_THREAD__)
  context.tsan_fiber = __tsan_get_current_fiber();
#endif
}

void switch_to(Context& from, Context& to) {
#if defined(__SANITIZE_ADDRESS__)
  announce_switch(&from, from, to);
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(to.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
  kdops_sim_switch(&from.sp, to.sp);
#if defined(__SANITIZE_ADDRESS__)
  complete_switch(from.asan_fake_stack);
#endif
}

void exit_to([[maybe_unused]] Context& from, Context& to) {
#if defined(__SANITIZE_ADDRESS__)
  announce_switch(nullptr, from, to);  // no fake stack to keep: this fiber is done
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(to.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
  // The finished fiber's stack pointer is never read again. Not a local: after the TSan switch
  // above, a store into this (pooled, reused) stack would be charged to the next fiber as a race.
  static thread_local void* discarded;
  kdops_sim_switch(&discarded, to.sp);
  __builtin_unreachable();
}

void on_start() {
#if defined(__SANITIZE_ADDRESS__)
  complete_switch(nullptr);
#endif
}

#if defined(__SANITIZE_THREAD__)
void destroy_tsan_fiber(Context& context) {
  if (context.tsan_fiber != nullptr) __tsan_destroy_fiber(context.tsan_fiber);
  context.tsan_fiber = nullptr;
}
#endif

}  // namespace kdops::sim::fiber
