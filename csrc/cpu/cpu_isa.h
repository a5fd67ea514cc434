// The vector ISA of kdops' hand-vectorised CPU kernels (the MaxSim panels, the Margin-MSE rows,
// the sorting network of short rankings), chosen at run time, so setup.py's flags stay those of
// a portable build.
#pragma once

namespace kdops::cpu {

enum class CpuIsa { generic, avx2, avx512 };

const char* isa_name(CpuIsa isa);

// The env KDOPS_CPU_ISA (generic | avx2 | avx512; refused with an error when this CPU lacks it)
// read at each call, else the widest this CPU supports.
CpuIsa cpu_isa();

}  // namespace kdops::cpu
