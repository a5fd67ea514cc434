"""kdops: fused C++/CUDA kernels for knowledge distillation in neural ranking.

Margin-MSE, Plackett-Luce listwise losses and ColBERT MaxSim as torch.ops.kdops.* ops with
autograd and torch.compile support. ``kdops.reference`` holds the plain PyTorch spec of each.
"""

import torch  # noqa: F401  (must load before kdops._C: _C links against libtorch)

from kdops import reference
from kdops.functional import margin_mse
from kdops.losses import MarginMSELoss
from kdops.ops import build_info

__version__ = "0.1.0"

__all__ = ["MarginMSELoss", "build_info", "margin_mse", "reference"]

# Plackett-Luce family (listwise losses).
from kdops.functional import listmle, listwise_kd_loss, plackett_luce_loss, pld_loss  # noqa: E402
from kdops.losses import ListMLELoss, ListwiseKDLoss, PlackettLuceLoss, PLDLoss  # noqa: E402

__all__ += [
    "ListMLELoss", "ListwiseKDLoss", "PLDLoss", "PlackettLuceLoss",
    "listmle", "listwise_kd_loss", "plackett_luce_loss", "pld_loss",
]
