// A kernel's memory fault fails its launch (see faults.h). The handler runs on an alternate stack
// (a fault on a fiber's guard page leaves no stack to run on), unblocks the signal, and leaves the
// faulting fiber for the launching host context through fail(), as a simulator check does: the
// fault is synchronous, raised by the kernel's own instruction, so nothing the runtime holds is
// half-updated. The fiber is abandoned without unwinding, like any failed fiber.
#include "faults.h"

#include <signal.h>
#include <sys/mman.h>

#include <cstdio>
#include <mutex>

#include "runtime_api.h"

namespace kdops::sim::detail {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
void catch_kernel_faults() {}
#else
namespace {

struct sigaction previous_segv, previous_bus;

void pass_on(int sig, siginfo_t* info, void* context) {
  const struct sigaction& previous = sig == SIGSEGV ? previous_segv : previous_bus;
  if (previous.sa_flags & SA_SIGINFO) {
    previous.sa_sigaction(sig, info, context);
  } else if (previous.sa_handler != SIG_IGN && previous.sa_handler != SIG_DFL) {
    previous.sa_handler(sig);
  } else {
    signal(sig, SIG_DFL);  // the faulting instruction runs again and the default action ends the process
  }
}

void on_fault(int sig, siginfo_t* info, void* context) {
  if (current_thread == nullptr) {
    pass_on(sig, info, context);
    return;
  }
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, sig);
  pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);  // the handler never returns: the next fault must be caught too
  char message[128];
  std::snprintf(message, sizeof message, "memory fault in the kernel: %s at address %p (an out-of-bounds or wild access)",
                sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", info->si_addr);
  fail(message);
}

}  // namespace

void catch_kernel_faults() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction action = {};
    action.sa_sigaction = &on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_segv);
    sigaction(SIGBUS, &action, &previous_bus);
  });
  thread_local bool has_stack = false;  // per OS thread, kept for the thread's life
  if (has_stack) return;
  constexpr size_t kSize = 64 * 1024;
  void* memory = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return;  // faults then end the process, as before
  stack_t stack = {};
  stack.ss_sp = memory;
  stack.ss_size = kSize;
  if (sigaltstack(&stack, nullptr) == 0) has_stack = true;
}
#endif

}  // namespace kdops::sim::detail
