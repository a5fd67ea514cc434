"""Fuzzer over the raw ops (torch.ops.kdops.*, backward ops included): hypothesis builds
inconsistent argument sets (shapes, dtypes, meta tensors, saved tensors from other calls, index
values at and past every bound, mask values other than 0/1, bad scalars) and runs them in a
fresh process per batch (tests/fuzz_raw_worker.py). Each call must raise a Python exception or
return the oracle's result (tests/raw_calls.py); a crash, an abort or a hang fails the batch.

CI runs 3 fixed batches of 60 calls per backend (derandomized; hypothesis' first batch is its
simplest, 60 unmutated calls, so 120 drawn at random). More, with fresh randomness:
KDOPS_FUZZ_BATCHES=200 KDOPS_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz_raw_ops.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import DEVICES
from tests.raw_calls import RAW_OPS

ROOT = Path(__file__).resolve().parents[1]
BATCH = 60  # few batches of many calls: each batch pays a fresh interpreter's start (torch's import)
TIMEOUT_S = 240

selector = st.integers(0, 15)
position = st.integers(0, 1000)
mutation = st.one_of(
    st.tuples(st.just("swap"), selector, st.integers(0, 999), st.integers(0, 30)),
    st.tuples(st.just("dtype"), selector, st.sampled_from(["float64", "float32", "float16", "bfloat16", "int64", "int32", "uint8", "bool"])),
    st.tuples(st.just("meta"), selector),
    st.tuples(st.just("index"), selector, position,
              st.sampled_from(["bound", "bound-1", "bound+1", "-1", "-2", "big", "int32max", "int32min"])),
    st.tuples(st.just("duplicate"), selector, position),
    st.tuples(st.just("mask_value"), selector, position, st.sampled_from([2, -1, 0.5, "nan", 1, 0])),
    st.tuples(st.just("layout"), selector, st.sampled_from(["strided", "expand", "unsqueeze", "flatten", "empty"])),
    st.tuples(st.just("none"), selector),
    st.tuples(st.just("scalar"), selector, st.integers(0, 11)),
    st.tuples(st.just("top_k"), st.integers(0, 4)),
)
example = st.fixed_dictionaries({
    "op": st.sampled_from([r.name for r in RAW_OPS]),
    "seed": st.integers(0, 2**16),
    "size": st.integers(0, 30),
    "dtype": st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
    "mutations": st.lists(mutation, min_size=0, max_size=3),
    "all_meta": st.booleans(),
})


def run_batch(examples: list[dict], device: str) -> list[dict]:
    """Runs the examples in a fresh interpreter; fails on a crash, an abort or a hang, naming the
    example that was running."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run([sys.executable, "-m", "tests.fuzz_raw_worker", device], input=json.dumps(examples),
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        lines = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"hang: {_last_started(lines, examples)}") from None
    if proc.returncode != 0:
        raise AssertionError(f"the process died (exit status {proc.returncode}) in "
                             f"{_last_started(proc.stdout, examples)}\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if '"done"' in line]


def _last_started(stdout: str, examples: list[dict]) -> str:
    started = [json.loads(line)["start"] for line in stdout.splitlines() if '"start"' in line]
    return json.dumps(examples[started[-1]]) if started else "startup"


# The backend name itself (not the `device` fixture, which gives "cpu" for "sim"): the worker
# picks torch.ops.kdops_sim for "sim".
@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=int(os.environ.get("KDOPS_FUZZ_BATCHES", "3")), deadline=None,
          derandomize=not os.environ.get("KDOPS_FUZZ_RANDOM"))
@given(batch=st.lists(example, min_size=BATCH, max_size=BATCH))
def test_raw_ops_raise_or_match_the_oracle_never_crash(device, batch):
    results = run_batch(batch, device)
    assert len(results) == len(batch)
    failures = [(batch[r["done"]], r["detail"]) for r in results if r["outcome"] == "fail"]
    assert not failures, "\n".join(f"{json.dumps(ex)}\n  -> {detail}" for ex, detail in failures[:5])


def test_the_fuzzer_reaches_every_op_and_both_outcomes():
    """The harness itself: unmutated calls match the oracle, and a known-bad one raises."""
    batch = [{"op": r.name, "seed": 3, "size": 7, "dtype": "float32", "mutations": [], "all_meta": False} for r in RAW_OPS]
    batch.append({"op": "plackett_luce_loss", "seed": 1, "size": 5, "dtype": "float64",
                  "mutations": [["index", 1, 0, "bound"]], "all_meta": False})
    results = run_batch(batch, DEVICES[0])
    assert [r["outcome"] for r in results] == ["matched"] * len(RAW_OPS) + ["raised"], results
