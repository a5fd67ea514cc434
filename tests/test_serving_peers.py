"""The GPU peers' serving rows (benchmarks/cases_maxsim_serving.py): the residual bit-order
conversion, and, where the peers' wheels are importable (not in CI), their calls run under
Triton's interpreter against kdops.reference (benchmarks/check_serving_peers.py)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kdops
from benchmarks.cases_maxsim_serving import _bit_reversed_bytes

ROOT = Path(__file__).resolve().parents[1]
PEERS = all(importlib.util.find_spec(name) is not None for name in ("triton", "flash_maxsim", "late_interaction_kernels"))


def test_bit_reversal_puts_dimension_zero_in_the_low_bits():
    """kdops packs dimension 0 of a 2-bit residual in the top two bits, bit 0 first; the peer
    reads it from the low two bits, bit 0 lowest: the reversed byte decodes to the same buckets."""
    buckets = torch.randint(0, 4, (64, 8), generator=torch.Generator().manual_seed(1))
    centroids = torch.zeros(1, 8)
    cutoffs = torch.tensor([0.5, 1.5, 2.5])  # bucketize(x, cutoffs) == x for x in 0..3
    _, packed = kdops.residual_compress(buckets.float(), centroids, cutoffs)
    peer = _bit_reversed_bytes(packed).long()  # [64, 2]
    shifts = 2 * torch.arange(4)
    decoded = ((peer[:, :, None] >> shifts) & 3).flatten(1)  # dimension f: byte f // 4, bits 2 (f % 4)
    assert torch.equal(decoded, buckets)
    assert torch.equal(_bit_reversed_bytes(_bit_reversed_bytes(packed)), packed)


@pytest.mark.skipif(not PEERS, reason="flash-maxsim / late-interaction-kernels not importable")
def test_peers_agree_with_the_reference_under_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    run = subprocess.run([sys.executable, "-m", "benchmarks.check_serving_peers"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
