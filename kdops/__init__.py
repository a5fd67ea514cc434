"""kdops: fused C++/CUDA kernels for knowledge distillation in neural ranking.

Margin-MSE, Plackett-Luce listwise losses and ColBERT MaxSim as torch.ops.kdops.* ops with
autograd and torch.compile support. ``kdops.reference`` holds the plain PyTorch spec of each.
"""

import torch  # noqa: F401  (must load before kdops._C: _C links against libtorch)

from kdops import reference
from kdops.functional import (
    listmle,
    listwise_kd_loss,
    margin_mse,
    maxsim,
    maxsim_packed,
    plackett_luce_loss,
    pld_loss,
)
from kdops.serving import (
    maxsim_quantized,
    maxsim_residual,
    quantize_fp8,
    quantize_int8,
    residual_buckets,
    residual_compress,
)
from kdops.losses import (
    LearnedTemperature,
    ListMLELoss,
    ListwiseKDLoss,
    MarginMSELoss,
    MaxSim,
    PlackettLuceLoss,
    PLDLoss,
)
from kdops._version import __version__
from kdops.ops import build_info

__all__ = [
    "LearnedTemperature",
    "ListMLELoss",
    "ListwiseKDLoss",
    "MarginMSELoss",
    "MaxSim",
    "PLDLoss",
    "PlackettLuceLoss",
    "build_info",
    "listmle",
    "listwise_kd_loss",
    "margin_mse",
    "maxsim",
    "maxsim_packed",
    "maxsim_quantized",
    "maxsim_residual",
    "plackett_luce_loss",
    "pld_loss",
    "quantize_fp8",
    "quantize_int8",
    "reference",
    "residual_buckets",
    "residual_compress",
    "__version__",
]
