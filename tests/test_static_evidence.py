"""Static evidence from the compiled CUDA kernels (cuobjdump; no GPU needed): the MaxSim forward
runs on tensor cores on every sm_80+ arch, fp16/bf16 by HMMA.16816 and maxsim_quantized's int8
by IMMA.16832 (its other pairings by HMMA.16816 on fp16) fed by LDSM with no generic or global loads in their inner loops, and no kernel
spills to local memory."""

from __future__ import annotations

import re

import pytest

import kdops
from benchmarks import static_evidence

pytestmark = pytest.mark.skipif(not kdops.build_info()["cuda_kernels"], reason="a CPU-only build has no device code")


@pytest.fixture(scope="module")
def usage():
    if static_evidence.tool("cuobjdump") is None or static_evidence.tool("nvdisasm") is None:
        pytest.fail("cuobjdump/nvdisasm not found: pip install -r requirements-dev.txt (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm)")
    return static_evidence.resource_usage()


def _sm(arch: str) -> int:
    return int(re.fullmatch(r"sm_(\d+)a?", arch).group(1))


def _assert_inner_loops_are_mma_fed_by_ldmatrix(kernels, instruction: str) -> None:
    """In every arch's SASS of each kernel, every innermost loop around the tensor-core
    instructions holds `instruction` and LDSM, and no generic or global load (LD.E, LDG)."""
    for mangled in {u.mangled for u in kernels}:
        for arch, code in static_evidence.sass(mangled).items():
            loops = static_evidence.inner_tensor_core_loops(code)
            assert loops, f"no loop around the tensor-core instructions of {mangled} ({arch})"
            for loop in loops:
                ops = [static_evidence.opcode(i) for i in loop]
                assert any(op.startswith(instruction) for op in ops), (arch, ops)
                assert any(op.startswith("LDSM") for op in ops), (arch, ops)
                generic = [op for op in ops if re.fullmatch(r"LD(G|\.|$).*", op)]
                assert not generic, (arch, mangled, generic)


def test_every_built_arch_has_a_cubin_of_every_kernel(usage):
    archs = {u.arch for u in usage}
    assert archs == {a for a in kdops.build_info()["cuda_archs"] if a.startswith("sm_")}
    kernels = {a: {u.kernel for u in usage if u.arch == a} for a in archs}
    assert len({frozenset(k) for k in kernels.values()}) == 1, "some arch lacks a kernel"


def test_tensor_core_maxsim_forward_uses_tensor_cores_on_every_sm80_plus_cubin(usage):
    """fp16, bf16 (mma.sync) and fp32-as-TF32 (WMMA) instances, with and without the argmax, all with HMMA."""
    kernels = static_evidence.tensor_core_kernels(usage)
    names = {u.kernel for u in usage if u.mangled in kernels}
    for kernel, scalar in (("mma::maxsim_mma_kernel", "c10::Half"), ("mma::maxsim_mma_kernel", "c10::BFloat16"),
                           ("maxsim_tensor_core_kernel", "float")):
        for write_argmax in ("true", "false"):
            assert any(f"{kernel}<{scalar}, {write_argmax}>" in n for n in names), (kernel, scalar, write_argmax, names)
    archs = {u.arch for u in usage if _sm(u.arch) >= 80}
    assert archs
    for mangled in kernels:
        counts = static_evidence.tensor_core_instructions(mangled)
        for arch in archs:
            assert counts.get(arch, 0) > 0, f"no HMMA/HGMMA in {mangled} for {arch}"


def test_16bit_maxsim_forward_inner_loop_is_ldmatrix_and_mma_only(usage):
    """The fp16/bf16 forward's innermost loops around the tensor-core instructions (one per m16-tile
    count, unrolled over features): HMMA.16816 fed by LDSM, no generic (LD) or global (LDG) loads
    of fragments there (the WMMA kernel's bf16 fragments were 32-bit LD.E), no stack, and at most
    the 128 registers its launch bounds allow (4 blocks of 128 threads per SM)."""
    kernels = [u for u in usage if "mma::maxsim_mma_kernel<" in u.kernel and _sm(u.arch) >= 80]
    assert {u.kernel.split("<")[1].split(",")[0] for u in kernels} == {"c10::Half", "c10::BFloat16"}
    for u in kernels:
        assert u.stack_bytes == 0 and u.registers <= 128, (u.arch, u.kernel, u.stack_bytes, u.registers)
    _assert_inner_loops_are_mma_fed_by_ldmatrix(kernels, "HMMA.16816")


@pytest.mark.parametrize("operands, instruction, max_registers",
                         [("Int8Operands", "IMMA.16832", 128), ("HalfOperands", "HMMA.16816", 168)])
def test_quantized_maxsim_forward_inner_loop_is_ldmatrix_and_mma_only(usage, operands, instruction, max_registers):
    """The serving forward (maxsim_quantized, maxsim_residual), with and without the argmax:
    int8 x int8 by IMMA.16832 (mma.sync m16n8k32 .s8), the other pairings and residual docs by
    HMMA.16816 on fp16, each fed by LDSM in its innermost tensor-core loops, no generic or global
    loads there, no stack, and the registers its launch bounds allow (4 blocks of 128 threads per
    SM for int8, 3 for the fp16 decoders)."""
    kernels = [u for u in usage if "maxsim_serving_kernel<" in u.kernel and operands in u.kernel and _sm(u.arch) >= 80]
    assert {u.kernel.rsplit(", ", 1)[1].rstrip(">") for u in kernels} == {"true", "false"}, {u.kernel for u in kernels}
    for u in kernels:
        assert u.stack_bytes == 0 and u.registers <= max_registers, (u.arch, u.kernel, u.stack_bytes, u.registers)
    _assert_inner_loops_are_mma_fed_by_ldmatrix(kernels, instruction)


def test_int8_serving_forward_stages_tiles_by_cp_async_in_its_tile_loop(usage):
    """int8 x int8 tokens are copied as they are stored: by cp.async (LDGSTS), inside a loop that
    also holds the IMMA (the loop over the doc's tiles, which keeps the next tiles' copies in
    flight), on every sm_80+ cubin, with and without the argmax."""
    kernels = [u for u in usage if "maxsim_serving_kernel<" in u.kernel and "Int8Operands" in u.kernel and _sm(u.arch) >= 80]
    assert kernels
    for mangled in {u.mangled for u in kernels}:
        for arch, code in static_evidence.sass(mangled).items():
            loops = []
            for address, instruction in code:
                m = static_evidence.BRANCH.search(instruction)
                if m and int(m.group(1), 16) <= address:
                    loops.append([static_evidence.opcode(i) for a, i in code if int(m.group(1), 16) <= a <= address])
            assert any(any(op.startswith("LDGSTS") for op in ops) and any(op.startswith("IMMA") for op in ops)
                       for ops in loops), (arch, mangled)


def test_no_kernel_uses_local_memory_and_maxsim_kernels_no_stack(usage):
    """LOCAL (local memory per thread) is 0 everywhere; the MaxSim kernels also keep no stack frame
    (spills land there). A few other kernels keep an 8-16 byte frame on some archs (see
    benchmarks/results/static/kernels.md)."""
    local = [(u.arch, u.kernel, u.local_bytes) for u in usage if u.local_bytes > 0]
    assert not local, local
    maxsim = [u for u in usage if "maxsim" in u.kernel]
    assert {u.kernel.split("<")[0] for u in maxsim} >= {
        "tensor_core::maxsim_tensor_core_kernel", "tensor_core::mma::maxsim_mma_kernel", "doc_grad::maxsim_doc_grad_kernel",
        "maxsim::maxsim_forward_kernel", "query_grad::maxsim_query_grad_kernel", "doc_grad::maxsim_doc_grad_combine_kernel",
        "tensor_core::mma::maxsim_chunk_sum_kernel",  # the split forward's chunk sum
    }
    # Known regression, open: since the exact (SIMT) forward takes d in shared-memory chunks so
    # that any d runs, its instances keep a 24-48 byte frame on some archs. That kernel is the
    # fp64 path and fp32 without TF32; the tensor-core forward and both gradient kernels must
    # still keep none.
    stack = [(u.arch, u.kernel, u.stack_bytes) for u in maxsim
             if u.stack_bytes > 0 and not u.kernel.startswith("maxsim::maxsim_forward_kernel<")]
    assert not stack, stack
