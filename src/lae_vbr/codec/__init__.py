"""The compressed-file container and the image codec built on it.

The container (``lae_vbr.codec.container``) is pure Python; the codec API
(``lae_vbr.codec.api``: :class:`ImageCodec`, image I/O) needs torch and is imported on first
use, so reading file headers stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .container import (
    FORMAT_VERSION,
    Bitstream,
    ContainerError,
    ModelId,
    read_bitstream,
)

__all__ = [
    "FORMAT_VERSION",
    "Bitstream",
    "CodecError",
    "ContainerError",
    "DecodeError",
    "ImageCodec",
    "ModelId",
    "ModelMismatchError",
    "RateError",
    "read_bitstream",
    "read_image",
    "weights_digest",
    "write_png",
]

_FROM_API = {
    "CodecError",
    "DecodeError",
    "ImageCodec",
    "ModelMismatchError",
    "RateError",
    "read_image",
    "weights_digest",
    "write_png",
}


def __getattr__(name: str) -> Any:
    if name in _FROM_API:
        return getattr(import_module(".api", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
