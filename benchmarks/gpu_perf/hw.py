"""The GPUs the model knows, every constant with where it comes from. "datasheet" = NVIDIA's
A100 (80 GB SXM4) and H100 (SXM5) datasheets; "guide" = the CUDA C++ Programming Guide's
compute-capability tables (8.0, 9.0); "assumed" = not measured here and not published by NVIDIA:
the calibration table (docs/gpu-model.md) is what says how wrong these are together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: int
    sms: int  # datasheet
    clock_hz: float  # the clock the datasheet's tensor peak implies: peak / (SMs x FLOP/clk/SM)
    hmma_fma_per_clk: float  # mma.sync multiply-adds per SM per cycle
    hgmma_fma_per_clk: float  # wgmma (sm_90a): 0 where the arch has none
    hbm_bytes_per_s: float  # datasheet
    l2_bytes_per_s: float  # assumed (L2 -> SMs, all SMs)
    smem_per_sm: int  # guide: shared memory per SM a kernel can use
    schedulers: int = 4  # guide: 4 warp schedulers per SM, one instruction each per cycle
    regs_per_sm: int = 65536  # guide
    max_warps: int = 64  # guide (8.0, 9.0)
    max_blocks: int = 32  # guide
    smem_bytes_per_clk: int = 128  # guide: 32 banks x 4 bytes per cycle
    block_smem_reserve: int = 1024  # guide: 1 KB of shared memory reserved per block (8.x, 9.x)
    dependent_issue_cycles: int = 4  # assumed: a warp issues about one instruction per 4 cycles on
    # its own (ALU latency; Jia et al., "Dissecting the NVIDIA Volta GPU Architecture via
    # Microbenchmarking", 2018, measured 4 cycles for dependent FP32/INT ops)
    global_latency_cycles: int = 600  # assumed: a global load from HBM, in SM cycles (same source
    # family: microbenchmark papers put DRAM latency at 450-650 cycles on A100/H100)
    hbm_share: float = 0.85  # assumed achievable share of the HBM peak for a streaming read
    launch_s: float = 3e-6  # assumed GPU time of a launch (fill and drain) back to back


A100 = Gpu(
    name="A100-SXM4-80GB", arch=80, sms=108,
    # 312 TFLOP/s dense fp16 (datasheet) = 108 SMs x 1024 FMA x 2 x 1.41 GHz
    clock_hz=1.41e9, hmma_fma_per_clk=1024, hgmma_fma_per_clk=0,
    hbm_bytes_per_s=2.039e12, l2_bytes_per_s=5.0e12, smem_per_sm=164 * 1024,
)
H100 = Gpu(
    name="H100-SXM5-80GB", arch=90, sms=132,
    # 989.4 TFLOP/s dense fp16/bf16 (datasheet) = 132 SMs x 2048 FMA x 2 x 1.83 GHz (wgmma)
    clock_hz=1.83e9, hgmma_fma_per_clk=2048,
    # assumed: mma.sync reaches about 60% of the wgmma rate on Hopper (Luo et al., "Benchmarking
    # and Dissecting the Nvidia Hopper GPU Architecture", 2024, report mma.sync well below wgmma;
    # the 0.6 is this project's reading, not their number)
    hmma_fma_per_clk=0.6 * 2048,
    hbm_bytes_per_s=3.35e12, l2_bytes_per_s=7.0e12, smem_per_sm=228 * 1024,
)
GPUS = {80: A100, 90: H100}
