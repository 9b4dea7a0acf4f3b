"""Image files in and out of the codec: size-checked reading, PNG writing."""

from __future__ import annotations

import io
import tempfile
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from lae_vbr.atomic import write_atomic
from lae_vbr.data.images import DataError, load_rgb_image
from lae_vbr.data.tensors import image_to_tensor, tensor_to_uint8

from .errors import ImageError

__all__ = [
    "INPUT_FORMATS",
    "MAX_PIXELS",
    "image_pixels",
    "png_bytes",
    "read_image",
    "read_image_bytes",
    "write_png",
]

#: Largest image (height × width) encoded or decoded by default: 32 Mpx. Decoding needs
#: memory in proportion, so a header may not ask for more than this.
MAX_PIXELS = 1 << 25
#: Input formats (Pillow names; PGM/PBM count as PPM).
INPUT_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "PPM"})


def _header(path: Path) -> tuple[str, int, int]:
    """(format, width, height) from an image file's header, without decoding it."""
    try:
        with Image.open(path) as im:
            return im.format, *im.size
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ImageError(f"cannot read image {path}: not a PNG, JPEG, WebP or PPM file") from err


def image_pixels(path: str | PathLike) -> int:
    """Height × width of an image file from its header (0 if it cannot be read: reading it
    with :func:`read_image` then says why)."""
    try:
        _, width, height = _header(Path(path))
    except (OSError, ImageError):
        return 0
    return width * height


def read_image(path: str | PathLike, max_pixels: int = MAX_PIXELS) -> Tensor:
    """An image file as a float (1, 3, H, W) tensor in [0, 1] (8-bit RGB, see
    :func:`lae_vbr.data.load_rgb_image`); its size is checked before it is decoded."""
    path = Path(path)
    fmt, width, height = _header(path)
    if fmt not in INPUT_FORMATS:
        raise ImageError(f"{path} is a {fmt} image; use PNG, JPEG, WebP or PPM")
    if width * height > max_pixels:
        raise ImageError(f"{path} is {width}×{height}, above the limit of {max_pixels} pixels")
    try:
        return image_to_tensor(load_rgb_image(path))
    except DataError as err:
        raise ImageError(str(err)) from err


def read_image_bytes(data: bytes, name: str = "<stdin>", max_pixels: int = MAX_PIXELS) -> Tensor:
    """:func:`read_image` of an image held in memory (e.g. read from a pipe); ``name`` stands
    for it in messages. It goes through a private temporary file, so every format and bit
    depth :func:`read_image` handles is handled alike."""
    with tempfile.TemporaryDirectory(prefix="lae-vbr-") as folder:
        path = Path(folder) / "input"
        path.write_bytes(data)
        try:
            return read_image(path, max_pixels)
        except ImageError as err:
            raise ImageError(str(err).replace(str(path), name)) from None


def png_bytes(x: Tensor) -> bytes:
    """An image tensor encoded as an 8-bit RGB PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tensor_to_uint8(x.cpu()))).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(x: Tensor, path: str | PathLike) -> Path:
    """Save an image tensor as an 8-bit RGB PNG (encoded in memory, then written whole)."""
    return write_atomic(path, png_bytes(x))
