// Under the CUDA simulator this header's contents come from the force-included csrc/sim/cuda_sim.h;
// this empty file lets `#include <cuda_bf16.h>` in .cu files compile unchanged (add -isystem csrc/sim/include).
#pragma once

#if !defined(KDOPS_SIM)
#error "csrc/sim/include is for the simulator build only (-DKDOPS_SIM -include csrc/sim/cuda_sim.h)"
#endif
