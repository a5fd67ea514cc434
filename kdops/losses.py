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
# --- Plackett-Luce family (listwise) ----------------------------------------------------------


class PlackettLuceLoss(nn.Module):
    """``PlackettLuceLoss(top_k=None)(scores, ranking, weights=None, lengths=None)``; see
    :func:`kdops.plackett_luce_loss`."""

    def __init__(self, top_k: int | None = None, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.top_k, self.reduction = top_k, reduction

    def forward(
        self, scores: Tensor, ranking: Tensor, weights: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        return F.plackett_luce_loss(scores, ranking, weights, lengths, self.top_k, self.reduction)

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, reduction={self.reduction!r}"


class ListMLELoss(nn.Module):
    """``ListMLELoss(top_k=None)(scores, relevance, lengths=None)``; see :func:`kdops.listmle`."""

    def __init__(self, top_k: int | None = None, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.top_k, self.reduction = top_k, reduction

    def forward(self, scores: Tensor, relevance: Tensor, lengths: Tensor | None = None) -> Tensor:
        return F.listmle(scores, relevance, lengths, self.top_k, self.reduction)

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, reduction={self.reduction!r}"


class PLDLoss(nn.Module):
    """``PLDLoss(temperature=1.0)(student_logits, teacher_logits, target)``; see
    :func:`kdops.pld_loss`."""

    def __init__(self, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.temperature, self.reduction = temperature, reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        return F.pld_loss(student_logits, teacher_logits, target, self.temperature, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class ListwiseKDLoss(nn.Module):
    """``ListwiseKDLoss(temperature=1.0)(student, teacher, lengths=None)``; see
    :func:`kdops.listwise_kd_loss`."""

    def __init__(
        self,
        temperature: float = 1.0,
        student_temperature: float | None = None,
        teacher_temperature: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.temperature, self.reduction = temperature, reduction
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature

    def forward(self, student: Tensor, teacher: Tensor, lengths: Tensor | None = None) -> Tensor:
        return F.listwise_kd_loss(
            student, teacher, self.temperature, self.student_temperature, self.teacher_temperature,
            lengths, self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.teacher_temperature}, reduction={self.reduction!r}"
        )
