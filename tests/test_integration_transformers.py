"""kdops' Trainer loss hook: the loss it returns, its normalisation under gradient
accumulation, and a real transformers.Trainer run that uses it."""

from __future__ import annotations

import pytest
import torch

import kdops
from kdops.integrations.transformers import LOSSES, DistillationLoss


def _scores(rows=6, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, k, generator=g, requires_grad=True), torch.randn(rows, k, generator=g)


def _direct(loss, student, teacher):
    if loss == "margin_mse":
        return kdops.margin_mse(student, teacher)
    if loss == "listwise_kd":
        return kdops.listwise_kd_loss(student, teacher)
    return kdops.pld_loss(student, teacher, torch.zeros(student.shape[0], dtype=torch.long))


@pytest.mark.parametrize("loss", LOSSES)
def test_hook_computes_the_kdops_loss_from_outputs_and_labels(loss):
    student, teacher = _scores()
    hook = DistillationLoss(loss)
    expected = _direct(loss, student, teacher)
    torch.testing.assert_close(hook({"logits": student}, teacher), expected)
    # A reranker's flat [B*K, 1] logits, grouped back into lists.
    flat = DistillationLoss(loss, group_size=4)({"logits": student.reshape(-1, 1)}, teacher)
    torch.testing.assert_close(flat, expected)


@pytest.mark.parametrize("loss", LOSSES)
def test_accumulated_halves_give_the_full_batch_gradient(loss):
    student, teacher = _scores(rows=8)
    hook = DistillationLoss(loss)
    (full,) = torch.autograd.grad(hook({"logits": student}, teacher), student)
    items = teacher.numel()  # what Trainer passes: label entries in the accumulated batch
    halves = sum(hook({"logits": student[i : i + 4]}, teacher[i : i + 4], num_items_in_batch=items) for i in (0, 4))
    (accumulated,) = torch.autograd.grad(halves, student)
    torch.testing.assert_close(accumulated, full)


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss must be one of"):
        DistillationLoss("kl")
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        DistillationLoss("margin_mse", group_size=1)
    with pytest.raises(ValueError, match="teacher's scores"):
        DistillationLoss()({"logits": torch.randn(2, 3)}, None)


def test_trainer_trains_with_the_hook(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    class Scorer(torch.nn.Module):
        """Scores K candidates per query: a linear map of candidate features."""

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 1)

        def forward(self, features):
            return {"logits": self.linear(features).squeeze(-1)}

    class Lists(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.features = torch.randn(64, 5, 8, generator=g)
            self.teacher = self.features @ torch.randn(8, generator=g)

        def __len__(self):
            return len(self.features)

        def __getitem__(self, i):
            return {"features": self.features[i], "labels": self.teacher[i]}

    torch.manual_seed(0)
    model, data = Scorer(), Lists()
    hook = DistillationLoss("listwise_kd")
    before = hook(model(data.features), data.teacher).item()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, gradient_accumulation_steps=2,
        num_train_epochs=10, learning_rate=0.05, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, logging_strategy="no", label_names=["labels"],
    )
    transformers.Trainer(model=model, args=args, train_dataset=data, compute_loss_func=hook).train()
    after = hook(model(data.features), data.teacher).item()
    assert after < 0.5 * before
