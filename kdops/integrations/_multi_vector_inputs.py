"""Multi-vector embeddings as the libraries hand them to a scorer, turned into what
:func:`kdops.maxsim` and :func:`kdops.maxsim_packed` take.

Callers pass padded ``[N, L, d]`` tensors with or without masks (the losses), ragged lists of
``[L_i, d]`` tensors, numpy arrays or nested Python lists (``MultiVectorEncoder.encode_query`` / ``encode_document``, hence every
evaluator), numpy arrays, a bare ``[L, d]`` for a single item, and masks as tensors or as lists
of per-item masks. Every error names the argument as the caller spelled it and the shape the
caller passed, never a reshaped one.

Without a mask, sentence-transformers treats all-zero rows of a padded tensor as padding and
the tokens of a list item as exactly its ``L_i`` rows; both rules are kept here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Padded:
    """Items padded to one length: ``embeddings [..., L, d]``, ``mask`` bool ``[..., L]``."""

    embeddings: Tensor
    mask: Tensor

    def empty(self) -> Tensor:
        """Items without a single valid token."""
        return ~self.mask.any(dim=-1)


@dataclass
class Packed:
    """Items stored back to back: item k is ``tokens[offsets[k]:offsets[k + 1]]``."""

    tokens: Tensor
    offsets: Tensor

    def empty(self) -> Tensor:
        return self.offsets.diff() == 0


def _as_float_tensor(value, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    elif isinstance(value, (list, tuple)):  # one item as nested Python lists of numbers
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`{name}` is a list that is not a [tokens, dim] grid of numbers: {err}") from None
    if not isinstance(value, Tensor):
        raise TypeError(
            f"`{name}` must be a tensor, a numpy array or a list of [tokens, dim] items, got {type(value).__name__}"
        )
    # Quantized (integer) embeddings score as float32, as in sentence-transformers.
    return value if value.is_floating_point() else value.float()


def _as_mask(mask, name: str) -> Tensor | None:
    if mask is None:
        return None
    if isinstance(mask, (list, tuple)):  # per-item masks, padded to the batch like the embeddings
        mask = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(m) for m in mask], batch_first=True)
    elif isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    elif not isinstance(mask, Tensor):
        raise TypeError(f"`{name}` must be a tensor, a numpy array or a list of per-item masks, got {type(mask).__name__}")
    return mask.bool()  # nonzero = a real token


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def split_side(embeddings, mask, name: str, mask_name: str) -> tuple[Tensor | list[Tensor], Tensor | None]:
    """One side of a scoring call as ``(items, mask)``: items a tensor or a list of 2-D float
    tensors (list items may be tensors, numpy arrays or nested Python lists, all of one embedding
    size), a bare ``[L, d]`` tensor (one item, as a singular ``encode`` call returns) lifted to a
    batch of one, and the mask a bool tensor or None."""
    mask = _as_mask(mask, mask_name)
    if isinstance(embeddings, (list, tuple)):
        items = [_as_float_tensor(item, f"{name}[{i}]") for i, item in enumerate(embeddings)]
        for i, item in enumerate(items):
            if item.dim() != 2:
                raise ValueError(f"`{name}[{i}]` must be a [tokens, dim] tensor, got shape {_shape(item)}")
            if item.shape[-1] != items[0].shape[-1]:
                raise ValueError(
                    f"`{name}[{i}]` has embedding size {item.shape[-1]}, but `{name}[0]` has {items[0].shape[-1]}: "
                    "every item of a side must have the same embedding size"
                )
        return items, mask
    tensor = _as_float_tensor(embeddings, name)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
        if mask is not None and mask.dim() == 1:
            mask = mask.unsqueeze(0)
    return tensor, mask


def _fit_mask(mask: Tensor, expected: list[int], mask_name: str, name: str) -> Tensor:
    """A mask for items whose tokens span ``expected`` (``[..., L]``), broadcast over the batch
    dimensions where it has size 1 or lacks them, as sentence-transformers broadcasts a ``(1, L)``
    mask; anything else raises, naming the mask and both shapes."""
    if mask.shape[-1] != expected[-1]:
        raise ValueError(
            f"`{mask_name}` covers {mask.shape[-1]} tokens, but the padded embeddings have {expected[-1]}: "
            f"`{mask_name}` must have shape {expected} to match `{name}`, got {_shape(mask)}"
        )
    if _shape(mask) == expected:
        return mask
    try:
        if mask.dim() <= len(expected) and list(torch.broadcast_shapes(mask.shape, expected)) == expected:
            return mask.expand(expected)
    except RuntimeError:
        pass
    raise ValueError(f"`{mask_name}` must have shape {expected} to match `{name}`, got {_shape(mask)}")


def pad(items: Tensor | list[Tensor], mask: Tensor | None, name: str, mask_name: str, rank: int = 3) -> Padded:
    """Items as one padded tensor of ``rank`` dims: a list is padded once (its mask from the
    item lengths), a tensor kept as is (its mask from its non-zero rows)."""
    if isinstance(items, list):
        if rank != 3:
            raise ValueError(f"`{name}` must be a {rank}-D tensor here, got a list of {len(items)} tensors")
        lengths = torch.tensor([len(item) for item in items])
        embeddings = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
        if mask is None:
            mask = torch.arange(embeddings.shape[1]) < lengths.unsqueeze(1)
        return Padded(embeddings, _fit_mask(mask.to(embeddings.device), _shape(embeddings)[:-1], mask_name, name))
    if items.dim() != rank:
        layout = "[batch, tokens, dim]" if rank == 3 else "[batch, n_docs, tokens, dim]"
        raise ValueError(f"`{name}` must be {layout} ({rank}-D), got shape {_shape(items)}")
    if mask is None:
        mask = items.ne(0).any(dim=-1)
    return Padded(items, _fit_mask(mask.to(items.device), _shape(items)[:-1], mask_name, name))


def pack(items: list[Tensor], mask: Tensor | None, name: str, mask_name: str) -> Packed:
    """A ragged list back to back in one copy, no padding; a mask drops the tokens it marks."""
    lengths = torch.tensor([len(item) for item in items])
    tokens = torch.cat(items)
    if mask is not None:
        mask = _fit_mask(mask, [len(items), int(lengths.max())], mask_name, name)
        within = torch.arange(mask.shape[1]) < lengths.unsqueeze(1)
        kept = mask.cpu() & within
        tokens = tokens[kept[within].to(tokens.device)]
        lengths = kept.sum(dim=1)
    offsets = torch.zeros(len(items) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return Packed(tokens, offsets.to(tokens.device))


def to_device(items: Tensor | list[Tensor], mask: Tensor | None, device: torch.device):
    """One side moved to the scoring device (a caller may pass CPU masks with GPU embeddings)."""
    if isinstance(items, list):
        items = [item.to(device) for item in items]
    else:
        items = items.to(device)
    return items, None if mask is None else mask.to(device)


def device_of(items: Tensor | list[Tensor]) -> torch.device:
    if isinstance(items, list):
        return items[0].device if items else torch.device("cpu")
    return items.device


def check_pair(queries: Tensor, documents: Tensor, names: tuple[str, str]) -> None:
    """The embedding size and dtype both sides must share, named as the caller passed them."""
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same embedding size, got {queries.shape[-1]} and {documents.shape[-1]}"
        )
    if queries.dtype != documents.dtype:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same dtype, got {queries.dtype} and {documents.dtype}")
