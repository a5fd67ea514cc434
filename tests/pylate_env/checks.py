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


# --- what PyLate's own suite checks of its scorers, with kdops' --------------------------------


def test_grouped_scores_shape_order_and_slicing():
    """PyLate's tests/test_colbert_scores.py, on kdops' ColBERTScores: (Q, Q*N) query-major
    scores, equal to the per-group colbert_scores loop reordered, and a slice of queries scoring
    as the same rows of the full call (the loss's query chunks)."""
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(6, 5, 8, generator=g), torch.randn(6, 3, 7, 8, generator=g)
    full = kd_pylate.ColBERTScores()(q, d)
    assert full.shape == (6, 18)
    per_group = torch.stack([kd_pylate.colbert_scores(q, d[:, n]) for n in range(3)], dim=2).reshape(6, 18)
    torch.testing.assert_close(full, per_group)
    torch.testing.assert_close(full, scores.ColBERTScores()(q, d, backend="torch"))
    torch.testing.assert_close(kd_pylate.ColBERTScores()(q[:3], d), full[:3])
    positives = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    docs = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]], [[[0.0, 1.0]], [[0.5, 0.0]]]])
    assert kd_pylate.ColBERTScores()(positives, docs).argmax(dim=1).tolist() == [0, 2]  # positive at i*N


def test_backend_keeps_pylates_meaning(monkeypatch):
    """``backend=``: PyLate's validation and errors; None/"auto" scores with kdops, a named
    PyLate backend (or PYLATE_SCORES_BACKEND) runs PyLate's own implementation."""
    q, d = -torch.ones(1, 1, 2), torch.tensor([[[1.0, 1.0], [0.5, 0.5]]])
    d_mask = torch.tensor([[True, False]])
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'flash', 'lik'"):
        kd_pylate.colbert_scores(q, d, backend="nope")
    with pytest.raises(RuntimeError, match="CUDA or MPS"):
        kd_pylate.colbert_scores(q, d, backend="lik")
    with pytest.raises(RuntimeError, match="requires CUDA"):
        kd_pylate.colbert_scores(q, d, backend="flash")
    assert kd_pylate.colbert_scores(q, d, backend="auto").shape == (1, 1)
    exclude = kd_pylate.ColBERTScores(masking="exclude")
    d4, m4 = d.unsqueeze(1), d_mask.unsqueeze(1)
    pylate_torch = scores.ColBERTScores()(q, d4, documents_mask=m4, backend="torch")
    assert exclude(q, d4, documents_mask=m4).item() == -2.0 != pylate_torch.item()  # kdops' masking
    assert exclude(q, d4, documents_mask=m4, backend="auto").item() == -2.0
    torch.testing.assert_close(exclude(q, d4, documents_mask=m4, backend="torch"), pylate_torch)
    monkeypatch.setenv("PYLATE_SCORES_BACKEND", "torch")
    torch.testing.assert_close(exclude(q, d4, documents_mask=m4), pylate_torch)


def test_encode_output_scores(model):
    """``model.encode()`` returns a list of [L_i, d] numpy arrays: PyLate's scorers need equal
    lengths (queries, padded to query_length), kdops' take ragged documents too."""
    queries = model.encode(QUERIES, is_query=True)
    documents = model.encode([row[0] for row in DOCUMENTS], is_query=False)
    assert isinstance(documents, list) and len({len(doc) for doc in documents}) > 1
    expected = torch.stack([scores.colbert_scores(queries, [doc], backend="torch")[:, 0] for doc in documents], dim=1)
    torch.testing.assert_close(kd_pylate.colbert_scores(queries, documents), expected)
    with pytest.raises(ValueError):
        scores.colbert_scores(queries, documents, backend="torch")  # ragged: PyLate cannot stack them


# --- the one-line patch, PyLate's loss modules on kdops --------------------------------------


def test_patch_rebinds_and_unpatch_restores(model):
    import pylate.losses.distillation as distillation_module

    originals = (scores.colbert_kd_scores, losses.Distillation, distillation_module.colbert_kd_scores)
    swapped = kd_pylate.patch()
    try:
        assert kd_pylate.patch() == swapped
        for name in ("pylate.scores.colbert_scores", "pylate.scores.colbert.colbert_kd_scores",
                     "pylate.losses.distillation.colbert_kd_scores", "pylate.losses.Distillation",
                     "pylate.losses.Contrastive", "pylate.losses.CachedContrastive"):
            assert name in swapped
        assert losses.Distillation(model).score_metric is kd_pylate.colbert_kd_scores
        assert isinstance(losses.Contrastive(model).score_metric, kd_pylate.ColBERTScores)
        assert scores.colbert_scores is kd_pylate.colbert_scores
    finally:
        assert kd_pylate.unpatch() == swapped
    assert kd_pylate.unpatch() == []
    assert (scores.colbert_kd_scores, losses.Distillation, distillation_module.colbert_kd_scores) == originals


@pytest.mark.parametrize("normalize_scores", [True, False])
@pytest.mark.parametrize("size_average", [True, False])
def test_distillation_module_matches_pylate(model, normalize_scores, size_average):
    features = _features(model)
    labels = torch.randn(len(QUERIES), 3, generator=torch.Generator().manual_seed(2)) * 3
    kw = dict(normalize_scores=normalize_scores, size_average=size_average)
    _assert_same(_loss_and_grads(kd_pylate.Distillation(model, **kw), model, features, labels),
                 _loss_and_grads(losses.Distillation(model, **kw), model, features, labels))


def test_distillation_module_learns_the_temperature(model):
    """kdops' extra learn_temperature=True: at T = 1, PyLate's loss; the parameter log T gets a
    gradient and an optimizer step moves it."""
    features = _features(model)
    labels = torch.randn(len(QUERIES), 3, generator=torch.Generator().manual_seed(5)) * 3
    ours = kd_pylate.Distillation(model, learn_temperature=True)
    log_t = ours.learned_temperature.log_temperature
    with torch.no_grad():
        torch.testing.assert_close(ours(features, labels), losses.Distillation(model)(features, labels),
                                   rtol=1e-5, atol=1e-6)
    (log_t.grad,) = torch.autograd.grad(ours(features, labels), log_t)
    assert log_t.grad != 0
    torch.optim.SGD([log_t], lr=1.0).step()
    assert log_t.item() != 0.0


@pytest.mark.parametrize("name", ["Contrastive", "CachedContrastive"])
def test_contrastive_modules_match_pylate(model, name):
    features = _features(model, ways=2)
    features = [features[0], *[{k: v[j::2] for k, v in features[1].items()} for j in range(2)]]
    labels = torch.zeros(len(QUERIES))
    kw = {"mini_batch_size": 2} if name == "CachedContrastive" else {}
    ours, theirs = getattr(kd_pylate, name)(model, **kw), getattr(losses, name)(model, **kw)
    assert isinstance(ours.score_metric, kd_pylate.ColBERTScores)
    _assert_same(_loss_and_grads(ours, model, features, labels), _loss_and_grads(theirs, model, features, labels))


def test_distillation_module_is_finite_on_equal_half_scores(model):
    """fp16 student scores that are all equal (PyLate issue #239): PyLate 1.6.0's loss is NaN,
    kdops' finite, with finite gradients."""
    equal = torch.full((len(QUERIES), 3), 2.0, dtype=torch.float16, requires_grad=True)
    labels = torch.randn(len(QUERIES), 3)
    metric = lambda *args, **kwargs: equal  # noqa: E731 - the scores the model would give
    assert losses.Distillation(model, score_metric=metric)(_features(model), labels).isnan()
    loss = kd_pylate.Distillation(model, score_metric=metric)(_features(model), labels)
    loss.backward()
    assert loss.isfinite() and equal.grad.isfinite().all()


def test_distillation_module_honours_a_user_set_loss_function(model):
    ours, theirs = kd_pylate.Distillation(model), losses.Distillation(model)
    ours.loss_function = theirs.loss_function = torch.nn.KLDivLoss(reduction="mean", log_target=True)
    labels = torch.randn(len(QUERIES), 3)
    with torch.no_grad(), pytest.warns(UserWarning, match="kdops does not fuse"):
        got = ours(_features(model), labels)
    with torch.no_grad():
        torch.testing.assert_close(got, theirs(_features(model), labels))


def test_patched_pylate_trains_as_the_original(model, tmp_path):
    """PyLate's training code unchanged (its own loss name, its collator, sentence-transformers'
    trainer), as shipped and after ``patch()``: the patched run trains with kdops' loss and
    scoring, with the original's loss curve and weights to float32 round-off."""
    import copy

    from datasets import Dataset
    from pylate import utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    dataset = Dataset.from_dict({
        "query": QUERIES * 2, "positive": [row[0] for row in DOCUMENTS] * 2, "negative": [row[1] for row in DOCUMENTS] * 2,
    })
    made = []

    def train(out: str):
        student = copy.deepcopy(model)
        made.append(losses.Contrastive(student))  # looked up at run time, as user code would
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / out), max_steps=3, per_device_train_batch_size=2, learning_rate=0.05,
            optim="sgd", logging_steps=1, seed=0, report_to="none", save_strategy="no", use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=dataset, loss=made[-1],
                                             data_collator=utils.ColBERTCollator(tokenize_fn=student.tokenize))
        trainer.train()
        return torch.tensor([e["loss"] for e in trainer.state.log_history if "loss" in e]), student

    theirs_losses, theirs_model = train("theirs")
    kd_pylate.patch()
    try:
        ours_losses, ours_model = train("ours")
    finally:
        kd_pylate.unpatch()
    assert type(made[0]) is losses.Contrastive and type(made[1]) is kd_pylate.Contrastive
    assert len(ours_losses) == 3
    torch.testing.assert_close(ours_losses, theirs_losses, rtol=1e-5, atol=1e-7)
    moved = max((a - s).abs().max().item() for a, s in zip(theirs_model.parameters(), model.parameters()))
    assert moved > 1e-3, "the steps must change the weights for the comparison to mean anything"
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * moved)
