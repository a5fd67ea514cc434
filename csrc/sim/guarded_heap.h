// The simulator's "device memory": host allocations with guard bytes on both sides, so that a
// kernel writing just past the end (or before the start) of a buffer fails the launch that did
// it, naming the kernel and the buffer, instead of corrupting the host heap and crashing the
// process later in some other test (a wrong bound in a kernel found this way: the mutation
// test's warp_sort-direction aborted pytest in free()).
//
// kdops._C_sim makes this torch's CPU allocator (csrc/kdops.cpp), so the tensors simulated
// kernels receive are guarded; after every launch, runtime.cpp checks the guards of the
// allocations that the launch's parameters point into (every pointer-sized word of the
// parameters is looked up, so pointers inside structs passed by value count too). A wild write
// that jumps over the guards is not seen (the ASan lane sees it).
#pragma once

#include <cstddef>
#include <string>

namespace kdops::sim {

void* guarded_allocate(size_t bytes);  // 64-byte aligned; nullptr for 0 bytes
void guarded_free(void* pointer);

namespace detail {
// The damaged guards of the live guarded allocations that a word of [params, params + size)
// points into, described for an error message (and repaired); empty if none.
std::string damaged_guards(const void* params, size_t size);
// Whether `address` lies inside a live guarded allocation (the access recorder's test for device
// memory).
bool in_guarded_allocation(const void* address);
}  // namespace detail

}  // namespace kdops::sim
