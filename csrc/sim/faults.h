// Memory faults in simulated kernels (runtime.cpp calls catch_kernel_faults at each launch).
#pragma once

namespace kdops::sim::detail {

// From now on, a SIGSEGV or SIGBUS raised by a kernel thread on the calling OS thread fails its
// launch like any error the simulator finds (a RuntimeError naming the fault's address, kernel,
// block and thread), instead of ending the process: one bad kernel fails its own test. A fault
// outside a kernel goes to the handler installed before (Python's faulthandler, or the default
// action). Under ASan and TSan this does nothing: their own handlers report the fault, with the
// access's stack, and end the run.
void catch_kernel_faults();

}  // namespace kdops::sim::detail
