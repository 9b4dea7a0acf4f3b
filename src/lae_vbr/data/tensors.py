"""Images as tensors: the one conversion between 8-bit RGB arrays and model inputs."""

from __future__ import annotations

from os import PathLike

import numpy as np
import torch
from torch import Tensor

from .images import load_rgb_image

__all__ = ["image_to_tensor", "read_image_tensor", "tensor_to_uint8"]


def image_to_tensor(pixels: np.ndarray) -> Tensor:
    """An (H, W, 3) uint8 array as a (1, 3, H, W) float32 tensor in [0, 1] (a copy)."""
    array = np.ascontiguousarray(pixels)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def read_image_tensor(path: str | PathLike) -> Tensor:
    """An image file (any mode, see :func:`load_rgb_image`) as (1, 3, H, W) in [0, 1]."""
    return image_to_tensor(load_rgb_image(path))


def tensor_to_uint8(x: Tensor) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) image in [0, 1] as (H, W, 3) uint8, rounded to nearest."""
    x = x.squeeze(0) if x.dim() == 4 else x
    return x.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
