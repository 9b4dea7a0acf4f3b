"""Image data: reading files as 8-bit RGB, listing image folders, the Lightning data module.

The data module (and with it Lightning) is imported on first use, so tools that only read
images, such as the ``lae-vbr`` command, start quickly.
"""

from typing import Any

from .images import (
    IMAGE_FORMATS,
    DataError,
    DataWarning,
    check_image,
    list_images,
    load_rgb_image,
)
from .sample import SAMPLE_SPLITS, sample_images

_DATAMODULE = {"ImageDataModule", "ImageDataset", "SeededShuffle", "random_crop", "seed_worker"}

__all__ = [
    "IMAGE_FORMATS",
    "SAMPLE_SPLITS",
    "DataError",
    "DataWarning",
    "ImageDataModule",
    "ImageDataset",
    "SeededShuffle",
    "check_image",
    "list_images",
    "load_rgb_image",
    "random_crop",
    "sample_images",
    "seed_worker",
]


def __getattr__(name: str) -> Any:
    if name in _DATAMODULE:
        from . import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
