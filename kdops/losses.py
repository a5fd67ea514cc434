"""nn.Module wrappers around kdops.functional, for code that composes losses as modules."""

from __future__ import annotations

from torch import Tensor, nn

from kdops import functional as F
from kdops._validate import check_reduction


class MarginMSELoss(nn.Module):
    """Margin-MSE as a module: ``MarginMSELoss()(student, teacher, mask=None)`` or
    ``MarginMSELoss()(student_pos, student_neg, teacher_pos, teacher_neg)``; see
    :func:`kdops.margin_mse`."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, *scores: Tensor, mask: Tensor | None = None) -> Tensor:
        return F.margin_mse(*scores, mask=mask, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
