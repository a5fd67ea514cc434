"""nn.Module wrappers around kdops.functional, for code that composes losses as modules."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kdops import functional as F
from kdops._validate import check_positive, check_reduction


class LearnedTemperature(nn.Module):
    """A temperature learned with the model (curriculum temperature distillation, CTKD):
    ``LearnedTemperature(1.0)()`` is ``T = exp(log_temperature)``, a 0-dim tensor whose gradient
    flows to the parameter ``log_temperature``.

    Learned in log space: T stays positive whatever step the optimizer takes (a plain parameter
    can step through 0, which every op refuses), and a step changes T by a factor, the same
    at T = 0.05 as at T = 20 (dL/dlog T = T dL/dT), as a temperature's effect is relative. The
    plain gradient descends the loss in T; CTKD's adversarial schedule ascends it, e.g. by
    ``module.log_temperature.register_hook(lambda g: -g)``."""

    def __init__(self, initial: float = 1.0) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(check_positive(initial, "temperature"))))

    def forward(self) -> Tensor:
        return self.log_temperature.exp()

    def extra_repr(self) -> str:
        return f"temperature={math.exp(self.log_temperature.item()):g}"


def learned_temperature(learn: bool, temperature: float, student_temperature: float | None = None,
                        teacher_temperature: float | None = None) -> LearnedTemperature | None:
    """A :class:`LearnedTemperature` starting at ``temperature`` when ``learn``, else None. It
    stands for ``temperature`` on the sides without their own (fixed) temperature, so at least
    one side must have none."""
    if not isinstance(learn, bool):
        raise TypeError(f"learn_temperature must be a bool, got {type(learn).__name__}")
    if not learn:
        return None
    if student_temperature is not None and teacher_temperature is not None:
        raise ValueError("learn_temperature learns `temperature`, but student_temperature and teacher_temperature "
                         "both replace it: leave the side(s) to learn at None")
    return LearnedTemperature(temperature)


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
    :func:`kdops.pld_loss`. ``learn_temperature=True`` learns the temperature, starting at
    ``temperature`` (:class:`LearnedTemperature`, the submodule ``learned_temperature``)."""

    def __init__(self, temperature: float = 1.0, reduction: str = "mean", *, learn_temperature: bool = False) -> None:
        super().__init__()
        check_reduction(reduction)
        self.temperature, self.reduction = temperature, reduction
        self.learned_temperature = learned_temperature(learn_temperature, temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        temperature = self.temperature if self.learned_temperature is None else self.learned_temperature()
        return F.pld_loss(student_logits, teacher_logits, target, temperature, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class ListwiseKDLoss(nn.Module):
    """``ListwiseKDLoss(temperature=1.0)(student, teacher, lengths=None)``; see
    :func:`kdops.listwise_kd_loss`. ``learn_temperature=True`` learns ``temperature``, starting
    at its value (:class:`LearnedTemperature`, the submodule ``learned_temperature``), on each
    side whose own temperature is None (one learned temperature for both sides by default)."""

    def __init__(
        self,
        temperature: float = 1.0,
        student_temperature: float | None = None,
        teacher_temperature: float | None = None,
        reduction: str = "mean",
        *,
        learn_temperature: bool = False,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.temperature, self.reduction = temperature, reduction
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature
        self.learned_temperature = learned_temperature(learn_temperature, temperature, student_temperature,
                                                       teacher_temperature)

    def forward(self, student: Tensor, teacher: Tensor, lengths: Tensor | None = None) -> Tensor:
        temperature = self.temperature if self.learned_temperature is None else self.learned_temperature()
        return F.listwise_kd_loss(
            student, teacher, temperature, self.student_temperature, self.teacher_temperature,
            lengths, self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.teacher_temperature}, reduction={self.reduction!r}"
        )
