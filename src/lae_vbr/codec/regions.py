"""Quality maps and regions of interest, from image files to the maps a file stores.

A user gives either a quality map (an 8-bit grayscale image of any size: 0 is the lowest λ
index, 255 the highest) or a region-of-interest mask (nonzero pixels are the ROI), which the
codec codes ``boost`` λ indices above the background. Both become a
:class:`~.container.RateMap` on the latent grid (one position per 16×16 block of the padded
image): the file's λ index is the map's base (its lowest index) and each position stores its
offset above it in 1/16 of an index. A block is in the ROI when any of its pixels is, so the
region is never cut into; a quality map's block takes the mean of its pixels.

Pure numpy and Pillow: masks and maps are read and checked before a model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image

from lae_vbr.rate_axis import LATENT_STRIDE

from .container import MAP_LEVELS_PER_INDEX, RateMap, to_float32
from .targets import TargetError

__all__ = ["GrayImage", "Region", "RoiRegion", "quality_map_levels", "read_gray"]

#: A region of interest as rate control moves it: the quality map above each base λ index.
Region = Callable[[float], RateMap]

#: Pillow modes read as 8-bit gray (colour images are converted with ITU-R 601 luma).
_GRAY_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
#: Largest mask or map read (pixels), as for images.
_MAX_PIXELS = 1 << 25


@dataclass(frozen=True, eq=False)
class GrayImage:
    """An 8-bit grayscale image (a mask or a quality map) and where it came from."""

    pixels: np.ndarray  # (height, width) uint8
    name: str

    @property
    def has_region(self) -> bool:
        return bool(self.pixels.any())


def read_gray(path: str | PathLike, what: str) -> GrayImage:
    """Read a mask or map (``what`` names it in messages); TargetError for a file that is not
    an image, is not 8-bit, or is too large."""
    path = Path(path)
    if not path.is_file():
        raise TargetError(f"{what} {path} is not a file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > _MAX_PIXELS:
                raise TargetError(f"{what} {path} is {im.width}×{im.height}, too large")
            if im.mode not in _GRAY_MODES:
                raise TargetError(f"{what} {path} is a {im.mode} image; use an 8-bit grayscale PNG")
            pixels = np.asarray(im.convert("L"), dtype=np.uint8)
    except TargetError:
        raise
    except Exception:
        raise TargetError(f"{what} {path} is not an image (PNG, JPEG, WebP, PPM)") from None
    return GrayImage(pixels, str(path))


def _blocks(
    gray: np.ndarray, image_size: tuple[int, int], grid: tuple[int, int], nearest: bool
) -> np.ndarray:
    """``gray`` resized to the image, padded by edge replication as the codec pads the image,
    and cut into the grid's 16×16 blocks: (rows, cols, 16·16) float64."""
    height, width = image_size
    rows, cols = grid
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    scaled = np.asarray(Image.fromarray(gray).resize((width, height), resample), np.float64)
    pad = ((0, rows * LATENT_STRIDE - height), (0, cols * LATENT_STRIDE - width))
    padded = np.pad(scaled, pad, mode="edge")
    blocks = padded.reshape(rows, LATENT_STRIDE, cols, LATENT_STRIDE).transpose(0, 2, 1, 3)
    return blocks.reshape(rows, cols, -1)


def _levels_within(base: float, max_index: int) -> int:
    """The largest offset level a map based at ``base`` may hold (it stays within range)."""
    return min(255, math.floor((max_index - base) * MAP_LEVELS_PER_INDEX))


def quality_map_levels(
    gray: GrayImage, image_size: tuple[int, int], grid: tuple[int, int], max_index: int
) -> tuple[float, RateMap]:
    """(base λ index, map) for a quality map: gray level g ↦ index g / 255 · max_index, a
    block's mean, quantised to 1/16 of an index; the base is the lowest block's index."""
    index = _blocks(gray.pixels, image_size, grid, nearest=False).mean(axis=2) / 255 * max_index
    absolute = np.rint(index * MAP_LEVELS_PER_INDEX)
    lowest = int(absolute.min())
    base = to_float32(lowest / MAP_LEVELS_PER_INDEX)
    levels = np.clip(absolute - lowest, 0, _levels_within(base, max_index)).astype(np.uint8)
    return base, RateMap(grid[0], grid[1], levels.tobytes())


@dataclass(frozen=True, eq=False)
class RoiRegion:
    """A region of interest on the latent grid, asked for its quality map at any background
    index (what rate control moves): ``boost`` indices above the base on every block that holds
    a nonzero pixel of the mask, clamped to the highest index. The blocks are found once
    (:meth:`of`), not at each base a search tries."""

    blocks: np.ndarray  # (rows, cols) bool: the ROI's blocks
    boost: float
    max_index: int

    @classmethod
    def of(
        cls,
        mask: GrayImage,
        image_size: tuple[int, int],
        grid: tuple[int, int],
        boost: float,
        max_index: int,
    ) -> RoiRegion:
        """The region of ``mask`` (resized to the image) for an image of ``image_size``."""
        roi = _blocks(mask.pixels, image_size, grid, nearest=True).max(axis=2) > 0
        return cls(roi, boost, max_index)

    def __call__(self, base: float) -> RateMap:
        level = min(round(self.boost * MAP_LEVELS_PER_INDEX), _levels_within(base, self.max_index))
        levels = np.where(self.blocks, max(level, 0), 0).astype(np.uint8)
        rows, cols = self.blocks.shape
        return RateMap(rows, cols, levels.tobytes())
