"""``python -m kdops.info``: what kdops is, how it was built and what it can run here.

A missing CUDA kernel, a GPU the build has no code for, or a torch other than the one kdops was
built against shows here at once; kdops never falls back to Python for a missing kernel. The
same report as a dict: ``kdops.build_info()``."""

from __future__ import annotations

from kdops.ops import build_info


def main() -> None:
    report = build_info()
    installed = f" (installed distribution {report['kdops_installed']})" if report["kdops_installed"] else " (source tree, not installed)"
    print(f"kdops {report['kdops']}{installed} at {report['path']}")
    print(f"torch {report['torch']} running; kdops built against torch {report['torch_built']}")
    print(f"CUDA kernels compiled: {report['cuda_kernels']}  (nvcc {report['nvcc'] or '-'}; torch's CUDA {report['torch_cuda']}; "
          f"archs: {', '.join(report['cuda_archs']) or '-'})")
    print(f"CUDA device visible: {report['cuda_available']}")
    for gpu in report["gpus"]:
        print(f"  GPU {gpu['name']} (compute capability {gpu['capability']}): {gpu['verdict']}")
    print(f"CPU kernels' instruction set: {report['cpu_isa']}  (KDOPS_CPU_ISA=avx512|avx2|generic forces one)")
    print(f"simulated CUDA kernels (kdops._C_sim, torch.ops.kdops_sim) built: {report['simulator']}")
    width = max(len(op) for op in report["ops"])
    for op, keys in report["ops"].items():
        print(f"  {op:<{width}}  {', '.join(keys) or 'NO KERNEL'}")


if __name__ == "__main__":
    main()
