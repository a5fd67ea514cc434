"""kdops' PyLate-convention scoring and distillation: against PyLate's documented formulas
here, against real PyLate in its own venv (PyLate 1.6 pins an older sentence-transformers
than ours; `make .venv-pylate/.deps-installed` builds that venv; test_against_real_pylate runs
tests/pylate_env/checks.py there), and PyLate's own test suite run with kdops patched in."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
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
    kd_d = torch.tensor([
        [[[10.0], [0.0], [1.0]], [[20.0], [0.0], [1.0]], [[30.0], [0.0], [1.0]]],
        [[[0.0], [100.0], [1.0]], [[0.0], [200.0], [1.0]], [[0.0], [300.0], [1.0]]],
        [[[1.0], [0.0], [1000.0]], [[1.0], [0.0], [2000.0]], [[10.0], [0.0], [3000.0]]],
    ])
    kd_mask = torch.ones(3, 3, 3)
    kd_mask[0, 0, 0] = 0  # the first document's best token is masked: its next best, 1, counts
    expected = torch.tensor([[1.0, 20.0, 30.0], [200.0, 400.0, 600.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(kd_pylate.colbert_kd_scores(q, kd_d, q_mask, kd_mask), expected)


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


def test_distillation_loss_with_a_learned_temperature():
    """kdops' extra: temperature=T gives T^2 KL(softmax(labels / T) || softmax(scores / T)) after
    the normalisation (1.0: PyLate's loss), and a tensor T gets that formula's gradient."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randn(6, 8, generator=g, dtype=torch.float64)
    for normalize in (True, False):
        t, ref_t = (torch.tensor(0.7, dtype=torch.float64, requires_grad=True) for _ in range(2))
        ours = kd_pylate.distillation_loss(scores, labels, normalize, temperature=t)
        low, high = scores.min(1, keepdim=True).values, scores.max(1, keepdim=True).values
        student = (scores - low) / (high - low + 1e-8) if normalize else scores
        expected = ref_t**2 * pylate_distillation(student / ref_t, labels / ref_t, normalize=False)
        torch.testing.assert_close(ours, expected)
        torch.testing.assert_close(torch.autograd.grad(ours, t)[0], torch.autograd.grad(expected, ref_t)[0])


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


def test_distillation_loss_is_finite_on_equal_half_scores():
    """PyLate 1.6.0 normalises with epsilon 1e-8, which is 0 in fp16: a row of equal scores gives
    0/0 = NaN there (PyLate issue #239). kdops normalises in float32, and a row of equal scores
    passes no gradient (through the epsilon it would be 1e8 times the upstream one: inf in fp16)."""
    scores = torch.full((2, 4), 3.0, dtype=torch.float16)
    scores[1] = torch.tensor([1.0, 2.0, 0.5, 2.0])  # a row that does rank: PyLate's gradient
    scores.requires_grad_()
    labels = torch.randn(2, 4)
    assert pylate_distillation(scores, labels.half()).isnan(), "PyLate's fp16 normalisation must be the NaN case"
    loss = kd_pylate.distillation_loss(scores, labels)
    assert loss.dtype == torch.float16 and loss.isfinite()
    # Equal scores normalise to 0; the other row as PyLate in float32 (fp16 loss: its round-off).
    reference = scores.detach().float().requires_grad_()
    expected = pylate_distillation(reference, labels)
    torch.testing.assert_close(loss.float(), expected, rtol=1e-3, atol=1e-3)
    (grad,) = torch.autograd.grad(loss, scores)
    assert grad.isfinite().all() and (grad[0] == 0).all()
    (expected_grad,) = torch.autograd.grad(expected, reference)
    assert expected_grad[0].abs().max() > 1e6, "PyLate's float32 gradient of a tied row is the 1/epsilon one"
    torch.testing.assert_close(grad[1].float(), expected_grad[1], rtol=1e-3, atol=1e-3)


def test_scorers_take_encode_output():
    """PyLate's ``model.encode()`` returns a list of [L_i, d] numpy arrays; PyLate's scorers need
    equal lengths there (they stack them), kdops' pad them once and exclude the padding."""
    g = torch.Generator().manual_seed(3)
    queries = [torch.randn(n, 8, generator=g) for n in (4, 4)]
    documents = [torch.randn(n, 8, generator=g) for n in (3, 6, 5)]
    expected = torch.stack([torch.stack([(q @ d.T).max(dim=1).values.sum() for d in documents]) for q in queries])
    got = kd_pylate.colbert_scores([q.numpy() for q in queries], [d.numpy() for d in documents])
    torch.testing.assert_close(got, expected)
    nested = kd_pylate.colbert_scores([q.tolist() for q in queries], [d.tolist() for d in documents])
    torch.testing.assert_close(nested, expected)
    pairwise = kd_pylate.colbert_scores_pairwise([q.numpy() for q in queries], [d.numpy() for d in documents[:2]])
    torch.testing.assert_close(pairwise, expected.diagonal())
    with pytest.raises(ValueError, match=r"documents_embeddings\[1\] must be a \[tokens, dim\] item of the same dim"):
        kd_pylate.colbert_scores(queries, [documents[0], torch.randn(3, 6)])


def _pylate_requirement() -> str:
    lines = (ROOT / "requirements-pylate.txt").read_text().splitlines()
    return next(line.strip() for line in lines if line.startswith("pylate=="))


def _pylate_sdist() -> Path:
    """PyLate's sdist, which ships its tests/, from the package index (kept under build/ once
    downloaded; never part of the repository)."""
    requirement = _pylate_requirement()
    cache = ROOT / "build" / "pylate-sdist"
    name = f"pylate-{requirement.split('==')[1]}.tar.gz"
    if not (cache / name).exists():
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", requirement, "-d", str(cache)],
            capture_output=True, text=True, timeout=300,
        )
        if run.returncode != 0 or not (cache / name).exists():
            pytest.skip(f"PyLate's sdist ({requirement}) could not be downloaded from the package index: {run.stderr[-400:]}")
    return cache / name


def _outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """Each test's outcome from a junit report, passed, skipped or failed (failures and
    errors), with the report's message (the reason a test did not pass)."""
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                # A doctest's message is only its line; its text ends with the error.
                lines = [line for line in (child.text or child.get("message") or "").splitlines() if line.strip()]
                message = lines[-1].strip()[:200] if lines else ""
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome, message
    return outcomes


@pytest.mark.skipif(not PYLATE_PYTHON.exists(), reason=f"no PyLate venv at {PYLATE_PYTHON.parent.parent}: run `make .venv-pylate/.deps-installed`")
def test_pylate_own_suite_with_kdops_patched(tmp_path):
    """PyLate's own tests (its sdist's tests/ and the doctests of its scores and losses), run
    twice in the PyLate venv: as shipped, and with kdops' patch applied (tests/pylate_env/
    kdops_patch.py). Every test that passes with PyLate's own code must pass with kdops'. The hub
    is offline here: the tests that need its models or datasets fail in both runs; they are
    listed with their reasons, not hidden."""
    with tarfile.open(_pylate_sdist()) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        members = [m for m in sdist.getmembers() if m.name.startswith(f"{root}/tests/") or m.name == f"{root}/conftest.py"]
        sdist.extractall(tmp_path, members=members, filter="data")
    suite = tmp_path / root
    package = subprocess.run(
        [str(PYLATE_PYTHON), "-c", "import os, pylate; print(os.path.dirname(pylate.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    results, report = {}, tmp_path / "swapped.txt"
    for patched in (False, True):
        junit = tmp_path / f"{'kdops' if patched else 'pylate'}.xml"
        start = time.perf_counter()
        run = subprocess.run(
            [str(PYLATE_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
             "-o", "doctest_optionflags=NORMALIZE_WHITESPACE NUMBER", "-m", "not web and not slow",
             "--doctest-modules", f"--junitxml={junit}", "tests", f"{package}/scores", f"{package}/losses",
             *(["-p", "kdops_patch"] if patched else [])],
            cwd=suite, capture_output=True, text=True, timeout=900,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "KDOPS_PATCH_REPORT": str(report),
                 "PYTHONPATH": str(ROOT / "tests" / "pylate_env")},
        )
        assert junit.exists(), run.stdout[-4000:] + run.stderr[-4000:]
        results[patched] = _outcomes(junit)
        counts = {k: [o for o, _ in results[patched].values()].count(k) for k in ("passed", "failed", "skipped")}
        print(f"PyLate's suite, {'kdops patched' if patched else 'as shipped'}: {counts} in {time.perf_counter() - start:.0f} s")
    swapped = report.read_text().split()
    assert "pylate.scores.colbert.colbert_scores" in swapped and "pylate.losses.Distillation" in swapped, swapped
    original, kdops = results[False], results[True]
    assert original.keys() == kdops.keys()
    kdops_only_failures = {t: kdops[t] for t, (outcome, _) in original.items() if outcome == "passed" and kdops[t][0] != "passed"}
    assert not kdops_only_failures, kdops_only_failures
    assert sum(outcome == "passed" for outcome, _ in kdops.values()) >= 20, "too few of PyLate's tests ran to mean anything"
    for test in sorted(t for t, (outcome, _) in original.items() if outcome != "passed"):
        print(f"  not passing with PyLate's own code either: {test}: {original[test][0]}: {original[test][1]}")
