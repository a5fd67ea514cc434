"""``python -m kdops.info``: how kdops was built and which backend kernels each op has.

A missing CUDA kernel shows here at once; kdops never falls back to Python for it. The same
report as a dict: ``kdops.build_info()``."""

from __future__ import annotations

from kdops.ops import build_info


def main() -> None:
    report = build_info()
    print(f"torch {report['torch']} (CUDA {report['torch_cuda']})")
    print(f"kdops CUDA kernels compiled: {report['cuda_kernels']}  (archs: {', '.join(report['cuda_archs']) or '-'})")
    print(f"CUDA device visible: {report['cuda_available']}")
    print(f"simulated CUDA kernels (kdops._C_sim, torch.ops.kdops_sim) built: {report['simulator']}")
    width = max(len(op) for op in report["ops"])
    for op, keys in report["ops"].items():
        print(f"  {op:<{width}}  {', '.join(keys) or 'NO KERNEL'}")


if __name__ == "__main__":
    main()
