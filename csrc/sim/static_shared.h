// Static __shared__ between blocks (runtime.cpp calls these at each block's start).
#pragma once

namespace kdops::sim::detail {

// Fills every kernel's static __shared__ variable with 0xFF bytes, as dynamic shared memory is
// (dynamic_smem.h): on the simulator static __shared__ is thread-local storage (keywords.h), so
// without this the next block on the OS thread would find the previous block's contents and a
// missing initialisation could pass. The variables are the function-local thread_local statics
// of the simulated module (mangled `_ZZ...`; kernels declare no thread_local of their own) outside
// the simulator's namespace and the libraries', found in the module's ELF symbol table: a
// stripped module (no .symtab) is not poisoned.
void poison_static_shared();

// Whether `address` lies in this OS thread's copy of one of those variables (the access recorder's
// test for static shared memory).
bool in_static_shared(const void* address);

// Under TSan: forgets the accesses to the module's thread-local storage (static __shared__
// included), so that the previous block's accesses are not races with this block's.
void forget_static_shared_accesses();

}  // namespace kdops::sim::detail
