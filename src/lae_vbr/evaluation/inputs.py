"""What every measurement starts from: test images, checkpoints, the device, CPU threads.

The R-D evaluation and the studies read these the same way, so an image is converted to a
tensor in one place (:mod:`lae_vbr.data.tensors`), a missing checkpoint gives one message,
and timings are taken at a known thread count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.data import list_images, load_rgb_image
from lae_vbr.data.tensors import image_to_tensor
from lae_vbr.models.registry import load_codec
from lae_vbr.models.state_dict import CheckpointError

__all__ = [
    "InputImage",
    "checkpoint_paths",
    "load_test_images",
    "open_codec",
    "resolve_device",
    "torch_threads",
]


@dataclass(frozen=True, eq=False)
class InputImage:
    """A test image as read from its file: the 8-bit pixels (what classical codecs and the
    metrics' reference are made from) and, derived from them, the codecs' input ``x``."""

    name: str
    pixels: np.ndarray  # H×W×3 uint8

    @property
    def x(self) -> Tensor:
        """(1, 3, H, W) float32 in [0, 1], in the contiguous layout every record used."""
        return image_to_tensor(self.pixels).contiguous()

    @property
    def num_pixels(self) -> int:
        """H·W, the denominator of every bpp."""
        return int(self.pixels.shape[0] * self.pixels.shape[1])


def load_test_images(folder: str | PathLike, limit: int | None = None) -> list[InputImage]:
    """The first ``limit`` images of ``folder`` (sorted by name; all when None or 0);
    DataError when the folder has none."""
    paths = list_images(folder)
    paths = paths[: int(limit)] if limit else paths
    return [InputImage(p.name, load_rgb_image(p)) for p in paths]


def checkpoint_paths(value: Any) -> list[Path]:
    """``checkpoint`` as given in a config (none, one path or a list); each file must exist,
    so a typo fails before any image is coded."""
    if not value:
        items = []
    elif isinstance(value, str | PathLike):
        items = [value]
    else:
        items = list(value)
    paths = [Path(str(p)).expanduser() for p in items]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
    return paths


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else as torch reads it."""
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def open_codec(path: str | PathLike, device: str | torch.device = "auto") -> ImageCodec:
    """The codec of one checkpoint on ``device``, ready to code (CheckpointError if unusable)."""
    return ImageCodec(load_codec(Path(path).expanduser(), map_location=resolve_device(device)))


@contextmanager
def torch_threads(count: int | None) -> Iterator[int]:
    """Run inside with ``count`` torch CPU threads (torch's default when None) and yield the
    number in use, which descriptions record since timings depend on it; restored after."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
