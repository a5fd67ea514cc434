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


class MaxSim(nn.Module):
    """ColBERT MaxSim scoring as a module: ``MaxSim()(Q, D, q_mask=None, d_mask=None)`` for padded
    docs ([Nd, Ld, d] all pairs, or [Nq, K, Ld, d] per query), ``MaxSim()(Q, D_tokens,
    doc_offsets=offsets)`` for packed docs; see :func:`kdops.maxsim` and
    :func:`kdops.maxsim_packed`. ``length_normalize=True`` gives MeanMaxSim."""

    def __init__(self, length_normalize: bool = False) -> None:
        super().__init__()
        self.length_normalize = length_normalize

    def forward(
        self,
        Q: Tensor,
        D: Tensor,
        q_mask: Tensor | None = None,
        d_mask: Tensor | None = None,
        doc_offsets: Tensor | None = None,
    ) -> Tensor:
        if doc_offsets is not None:
            if d_mask is not None:
                raise ValueError("d_mask is not accepted with doc_offsets: packed docs hold only real tokens")
            return F.maxsim_packed(Q, D, doc_offsets, q_mask, length_normalize=self.length_normalize)
        return F.maxsim(Q, D, q_mask, d_mask, length_normalize=self.length_normalize)

    def extra_repr(self) -> str:
        return f"length_normalize={self.length_normalize}"
