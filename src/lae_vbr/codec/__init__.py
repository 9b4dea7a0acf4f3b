"""Compressed files and the codec that writes them.

The container (:mod:`.container`) is pure Python, so reading headers stays fast; everything
that needs torch is imported on first use:

* :mod:`.image_codec`: :class:`ImageCodec`, a loaded model coding images to bitstreams;
* :mod:`.images`: reading and writing image files;
* :mod:`.errors`: the errors of coding (:class:`CodecError` and its kinds);
* :mod:`.digest`: the weights digest that ties a file to its model;
* :mod:`.rate_model`, :mod:`.probe`, :mod:`.rate_control`, :mod:`.quality_control`,
  :mod:`.refine`: the R-λ model, one image priced and reconstructed at any λ without coding,
  coding to a bit rate, a file size, a total size for a set or a PSNR (:mod:`.targets` parses
  them without torch), and encoder-side latent refinement.
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
    "ImageError",
    "ModelId",
    "ModelMismatchError",
    "RateError",
    "default_checkpoint",
    "read_bitstream",
    "read_image",
    "weights_digest",
    "write_png",
]

_LAZY = {
    "CodecError": ".errors",
    "DecodeError": ".errors",
    "ImageError": ".errors",
    "ModelMismatchError": ".errors",
    "RateError": ".errors",
    "ImageCodec": ".image_codec",
    "default_checkpoint": ".image_codec",
    "read_image": ".images",
    "write_png": ".images",
    "weights_digest": ".digest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
