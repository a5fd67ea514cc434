"""kdops' PyLate-convention scoring and distillation against real PyLate 1.6 (its own
functions, losses and ColBERT models built from all-MiniLM-L6-v2). Runs inside the PyLate venv
(make .venv-pylate), launched by tests/test_integration_pylate.py; not collected by the main
pytest run, whose sentence-transformers is newer than the one PyLate pins."""

from __future__ import annotations

import pytest
import torch
from pylate import losses, models, scores
from pylate.losses.contrastive import extract_skiplist_mask

from kdops.integrations import pylate as kd_pylate
from tests.minilm import small_student

QUERIES = ["what do fruits give?", "is coffee bad, or good?", "how do plants grow"]
# Punctuation inside the documents: PyLate's skiplist masks those tokens mid-sequence.
DOCUMENTS = [
    ["fruits, like apples, give vitamins!", "coffee: a drink; it wakes you.", "plants (most) need light."],
    ["sugar, in excess, is bad.", "tea - green or black - calms.", "rain, sun and soil: growth!"],
    ["vitamins (c, d) help.", "coffee, black: bitter!", "seeds grow; roots spread."],
]


@pytest.fixture(scope="module")
def model():
    return small_student(models.ColBERT)  # with the 384 -> 128 projection PyLate adds, seeded


def _features(model, ways=3):
    queries = model.tokenize(QUERIES, is_query=True)
    documents = model.tokenize([doc for row in DOCUMENTS for doc in row[:ways]], is_query=False)
    return [queries, documents]


@pytest.fixture(scope="module")
def embedded(model):
    """Real token embeddings with PyLate's own (skiplist) masks, as its Distillation loss builds them."""
    features = _features(model)
    with torch.no_grad():
        q = torch.nn.functional.normalize(model(features[0])["token_embeddings"], dim=-1)
        d = torch.nn.functional.normalize(model(features[1])["token_embeddings"], dim=-1)
    q_mask, d_mask = extract_skiplist_mask(features, model.skiplist)
    d = d.view(len(QUERIES), -1, *d.shape[1:])
    d_mask = d_mask.view(len(QUERIES), -1, d_mask.shape[-1])
    return q, d, q_mask, d_mask


def test_skiplist_masks_are_not_prefixes(embedded):
    q, d, _, d_mask = embedded
    holes = d_mask[..., :-1].logical_not() & d_mask[..., 1:]  # a masked token followed by a valid one
    assert holes.any(), "the documents' punctuation must mask tokens mid-sequence"
    # Read as prefix lengths (what PyLate's flash backend does with a mask), they score differently.
    as_prefix = torch.arange(d_mask.shape[-1]) < d_mask.sum(dim=-1, keepdim=True)
    assert not torch.allclose(
        scores.colbert_kd_scores(q, d, None, as_prefix, backend="torch"),
        scores.colbert_kd_scores(q, d, None, d_mask, backend="torch"),
    )


@pytest.mark.parametrize("with_query_mask", [False, True])
@pytest.mark.parametrize("sign", [1, -1], ids=["real", "negated"])
def test_scores_match_pylate_torch_path(embedded, with_query_mask, sign):
    q, d, q_mask, d_mask = embedded
    q_mask = q_mask if with_query_mask else None
    d = sign * d  # negated: most similarities < 0, where a masked token's 0 wins PyLate's max
    if sign < 0:
        assert not torch.allclose(
            kd_pylate.colbert_kd_scores(q, d, q_mask, d_mask, masking="exclude"),
            scores.colbert_kd_scores(q, d, q_mask, d_mask, backend="torch"),
        ), "the masking policy must matter on these inputs"
    torch.testing.assert_close(
        kd_pylate.colbert_kd_scores(q, d, q_mask, d_mask),
        scores.colbert_kd_scores(q, d, q_mask, d_mask, backend="torch"),
    )
    flat, flat_mask = d.flatten(0, 1), d_mask.flatten(0, 1)
    torch.testing.assert_close(
        kd_pylate.colbert_scores(q, flat, q_mask, flat_mask),
        scores.colbert_scores(q, flat, q_mask, flat_mask, backend="torch"),
    )
    torch.testing.assert_close(
        kd_pylate.ColBERTScores()(q, d, q_mask, d_mask), scores.ColBERTScores()(q, d, q_mask, d_mask, backend="torch")
    )
    ragged = [doc[: int(m.nonzero().max()) + 1] for doc, m in zip(d[:, 0], d_mask[:, 0])]
    torch.testing.assert_close(
        kd_pylate.colbert_scores_pairwise(list(q), ragged), scores.colbert_scores_pairwise(list(q), ragged, backend="torch")
    )


def test_exclude_masking_never_lets_a_masked_token_win(embedded):
    q, d, q_mask, d_mask = embedded
    similarities = torch.einsum("qih,qkjh->qkij", q, d).masked_fill(~d_mask.unsqueeze(2), float("-inf"))
    expected = similarities.max(dim=-1).values.sum(dim=-1)
    torch.testing.assert_close(kd_pylate.colbert_kd_scores(q, d, None, d_mask, masking="exclude"), expected)


def _loss_and_grads(loss_module, model, features, labels):
    model.zero_grad()
    loss = loss_module(features, labels)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _assert_same(got, expected):
    (loss, grads), (expected_loss, expected_grads) = got, expected
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(expected_grads) > 0
    scale = max(g.abs().max().item() for g in expected_grads)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("normalize_scores", [True, False])
def test_distillation_with_kdops_scoring_matches_pylate(model, normalize_scores):
    features = _features(model)
    labels = torch.randn(len(QUERIES), 3, generator=torch.Generator().manual_seed(0)) * 3
    theirs = losses.Distillation(model, normalize_scores=normalize_scores)
    ours = losses.Distillation(model, score_metric=kd_pylate.colbert_kd_scores, normalize_scores=normalize_scores)
    _assert_same(_loss_and_grads(ours, model, features, labels), _loss_and_grads(theirs, model, features, labels))


@pytest.mark.parametrize("normalize_scores", [True, False])
@pytest.mark.parametrize("size_average", [True, False])
def test_distillation_loss_matches_pylates_loss(model, normalize_scores, size_average):
    """kdops' fused loss on given scores against PyLate's Distillation computing its loss from
    the same scores (its score_metric returns them)."""
    g = torch.Generator().manual_seed(1)
    student = (torch.randn(len(QUERIES), 3, generator=g) * 4).requires_grad_()
    labels = torch.randn(len(QUERIES), 3, generator=g) * 3
    pylate_loss = losses.Distillation(
        model, score_metric=lambda *args, **kwargs: student, normalize_scores=normalize_scores, size_average=size_average
    )
    expected = pylate_loss(_features(model), labels)
    got = kd_pylate.distillation_loss(student, labels, normalize_scores, size_average)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got, student)[0], torch.autograd.grad(expected, student)[0])


def test_contrastive_with_kdops_scoring_matches_pylate(model):
    features = _features(model, ways=2)
    features = [features[0], *[{k: v[j::2] for k, v in features[1].items()} for j in range(2)]]
    labels = torch.zeros(len(QUERIES))
    theirs = losses.Contrastive(model)
    ours = losses.Contrastive(model, score_metric=kd_pylate.ColBERTScores())
    _assert_same(_loss_and_grads(ours, model, features, labels), _loss_and_grads(theirs, model, features, labels))


def test_pylate_has_no_pluggable_scoring_backend():
    """PyLate 1.6 picks a backend from a fixed list (auto, torch, flash, lik); kdops plugs in
    through the losses' score_metric instead. Fails when PyLate grows a hook to register with."""
    q, d = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'flash', 'lik'"):
        scores.colbert_scores(q, d, backend="kdops")
