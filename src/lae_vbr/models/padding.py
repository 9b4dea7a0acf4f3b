"""Padding images to the size a codec needs, and cropping back."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["padding_for", "pad_image", "crop_image"]


def padding_for(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Bottom and right padding that makes (height, width) multiples of ``multiple``."""
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1×1, got {height}×{width}")
    return (-height) % multiple, (-width) % multiple


def pad_image(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad a (B, C, H, W) batch at the bottom/right to multiples of ``multiple``.

    Edge replication keeps the padded border smooth, so it costs few bits and stays within
    what the network saw in training (zero borders would add a sharp edge to code).
    """
    pad_h, pad_w = padding_for(x.shape[-2], x.shape[-1], multiple)
    if not (pad_h or pad_w):
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def crop_image(x: Tensor, height: int, width: int) -> Tensor:
    """Undo :func:`pad_image`."""
    return x[..., :height, :width]
