"""kdops' PyLate-convention scoring and distillation: against PyLate's documented formulas
here, and against real PyLate in its own venv (PyLate 1.6 pins an older sentence-transformers
than ours; `make .venv-pylate` builds that venv, and the last test runs tests/pylate_env there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdops.integrations import pylate as kd_pylate


def pylate_colbert_kd_scores(q, d, q_mask=None, d_mask=None):
    """PyLate's torch path, as documented: similarities multiplied by the masks, then max, sum."""
    scores = torch.einsum("ash,abth->abst", q, d)
    if q_mask is not None:
        scores = scores * q_mask.unsqueeze(1).unsqueeze(3)
    if d_mask is not None:
        scores = scores * d_mask.unsqueeze(2)
    return scores.max(dim=-1).values.sum(dim=-1)


def pylate_distillation(scores, labels, normalize=True, size_average=True):
    if normalize:
        low, high = scores.min(1, keepdim=True).values, scores.max(1, keepdim=True).values
        scores = (scores - low) / (high - low + 1e-8)
    kl = torch.nn.KLDivLoss(reduction="batchmean" if size_average else "sum", log_target=True)
    return kl(F.log_softmax(scores, -1), F.log_softmax(labels, -1))


def test_documented_examples():
    # The examples in PyLate's colbert_scores / colbert_kd_scores docstrings.
    q = torch.tensor([[[1.0], [0.0], [0.0], [0.0]], [[0.0], [2.0], [0.0], [0.0]], [[0.0], [0.0], [3.0], [0.0]]])
    d = torch.tensor([[[10.0], [0.0], [1.0]], [[0.0], [100.0], [10.0]], [[1.0], [0.0], [1000.0]]])
    d_mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    q_mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    expected = torch.tensor([[10.0, 10.0, 1000.0], [20.0, 20.0, 2000.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(kd_pylate.colbert_scores(q, d, q_mask, d_mask), expected)
    pairs_d = torch.tensor([[[10.0], [0.0], [1.0]], [[0.0], [100.0], [1.0]], [[1.0], [0.0], [1000.0]]])
    torch.testing.assert_close(kd_pylate.colbert_scores_pairwise(q, pairs_d), torch.tensor([10.0, 200.0, 3000.0]))


def test_kd_scores_match_pylate_where_masking_by_zero_is_harmless():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(4, 6, 8, generator=g)  # non-negative: every best similarity is >= 0
    d = torch.rand(4, 5, 9, 8, generator=g)
    q_mask = torch.rand(4, 6, generator=g) > 0.2
    d_mask = torch.rand(4, 5, 9, generator=g) > 0.3
    d_mask[..., 0] = True
    torch.testing.assert_close(
        kd_pylate.colbert_kd_scores(q, d, q_mask, d_mask), pylate_colbert_kd_scores(q, d, q_mask.float(), d_mask.float())
    )


def test_masking_policies_where_every_real_similarity_is_negative():
    q = torch.ones(1, 1, 2)
    d = -torch.ones(1, 1, 3, 2)  # every real similarity is -2
    d_mask = torch.tensor([[[True, True, False]]])
    assert pylate_colbert_kd_scores(q, d, None, d_mask.float()).item() == 0.0  # PyLate: the padding token wins
    assert kd_pylate.colbert_kd_scores(q, d, None, d_mask).item() == 0.0
    assert kd_pylate.colbert_kd_scores(q, d, None, d_mask, masking="exclude").item() == -2.0
    assert kd_pylate.colbert_kd_scores(q, d, None, torch.zeros_like(d_mask), masking="exclude").item() == 0.0


def test_grouped_scores_name_the_shape_passed():
    with pytest.raises(ValueError, match=r"documents_embeddings must be \[groups, n_docs, tokens, dim\].*\[6, 99, 16\]"):
        kd_pylate.ColBERTScores()(torch.randn(6, 5, 16), torch.randn(6, 99, 16))


def test_distillation_loss_matches_pylate():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(6, 8, generator=g, requires_grad=True)
    labels = torch.randn(6, 8, generator=g)
    for normalize in (True, False):
        for size_average in (True, False):
            ours = kd_pylate.distillation_loss(scores, labels, normalize, size_average)
            expected = pylate_distillation(scores, labels, normalize, size_average)
            torch.testing.assert_close(ours, expected)
            torch.testing.assert_close(torch.autograd.grad(ours, scores)[0], torch.autograd.grad(expected, scores)[0])


ROOT = Path(__file__).resolve().parent.parent
PYLATE_PYTHON = ROOT / os.environ.get("PYLATE_VENV", ".venv-pylate") / "bin" / "python"


@pytest.mark.skipif(not PYLATE_PYTHON.exists(), reason=f"no PyLate venv at {PYLATE_PYTHON.parent.parent}: run `make .venv-pylate/.deps-installed`")
def test_against_real_pylate():
    """tests/pylate_env/checks.py in the PyLate venv: real PyLate scores, losses and ColBERT models."""
    run = subprocess.run(
        [str(PYLATE_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/pylate_env/checks.py"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    sys.stdout.write(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-4000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout
