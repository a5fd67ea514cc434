"""A ``compute_loss_func`` for ``transformers.Trainer`` that distils teacher scores into the
student's scores with a fused kdops loss::

    trainer = Trainer(model=student, args=args, train_dataset=data,
                      compute_loss_func=DistillationLoss("listwise_kd", temperature=2.0))

The model's output holds the student's scores of each query's candidate list (``logits``,
[B, K], or [B*K] / [B*K, 1] with ``group_size=K``, as a cross-encoder reranker emits them);
the batch's ``labels`` hold the teacher's scores [B, K] of the same candidates, the positive
first. For a model whose ``forward`` takes no ``labels`` argument, pass
``TrainingArguments(label_names=["labels"])`` so that Trainer keeps them in the batch. No
dependency on transformers itself: any training loop can call it the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import kdops

__all__ = ["DistillationLoss"]

LOSSES = ("margin_mse", "listwise_kd", "pld")


class DistillationLoss:
    """``loss(outputs, labels, num_items_in_batch=None)``: a Trainer ``compute_loss_func``.

    - ``"margin_mse"``: :func:`kdops.margin_mse` on the [B, K] scores (column 0 the positive).
    - ``"listwise_kd"``: :func:`kdops.listwise_kd_loss` (``temperature`` etc. passed through).
    - ``"pld"``: :func:`kdops.pld_loss`, the positive (column 0) as the true class.

    With gradient accumulation Trainer passes ``num_items_in_batch`` (the number of label
    entries in the accumulated batch, K per row) and expects a loss already normalised by it,
    so the loss is then summed and divided by the accumulated rows (terms, for Margin-MSE):
    the same mean as one large batch."""

    def __init__(self, loss: str = "listwise_kd", group_size: int | None = None, **loss_kwargs: Any) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if group_size is not None and group_size < 2:
            raise ValueError(f"group_size must be at least 2 (a positive and a negative), got {group_size}")
        self.loss = loss
        self.group_size = group_size
        self.loss_kwargs = loss_kwargs

    def _student_scores(self, outputs: Any, labels: Tensor) -> Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else getattr(outputs, "logits", outputs)
        if not isinstance(logits, Tensor):
            raise TypeError(f"outputs must hold a 'logits' tensor, got {type(outputs).__name__}")
        width = self.group_size or labels.shape[-1]
        return logits.reshape(-1, width)

    def __call__(self, outputs: Any, labels: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("DistillationLoss needs the teacher's scores as the batch's 'labels'")
        student = self._student_scores(outputs, labels)
        teacher = labels.detach().to(student.dtype).reshape(student.shape)
        reduction = "mean" if num_items_in_batch is None else "sum"
        if self.loss == "margin_mse":
            loss = kdops.margin_mse(student, teacher, reduction=reduction, **self.loss_kwargs)
            terms_per_row = student.shape[1] - 1
        elif self.loss == "listwise_kd":
            loss = kdops.listwise_kd_loss(student, teacher, reduction=reduction, **self.loss_kwargs)
            terms_per_row = 1
        else:
            target = torch.zeros(student.shape[0], dtype=torch.long, device=student.device)
            loss = kdops.pld_loss(student, teacher, target, reduction=reduction, **self.loss_kwargs)
            terms_per_row = 1
        if num_items_in_batch is None:
            return loss
        rows = num_items_in_batch / student.shape[1]
        return loss / (rows * terms_per_row)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.loss_kwargs.items())
        return f"DistillationLoss({self.loss!r}, group_size={self.group_size}{extra})"
