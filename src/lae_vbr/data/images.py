"""Reading image files as 8-bit RGB, and listing the usable images in a folder.

Every image, whatever its mode, comes out as a ``uint8`` array of shape ``(H, W, 3)``:

* grayscale (``1``, ``L``, 16-bit ``I;16*``) is repeated over the three channels;
* 16-bit data (grayscale, and RGB/RGBA PNG or TIFF, which Pillow truncates to the high byte)
  is scaled with rounding, ``round(v / 257)``, never clipped;
* 32-bit ``I`` is taken as 8-bit when its maximum is at most 255, else as 16-bit;
  float ``F`` as [0, 1] when its maximum is at most 1, else as [0, 255]; out-of-range values
  are clipped;
* transparency (RGBA, LA, palette or colour-key ``tRNS``) is composited onto white, the way a
  viewer shows the picture, so transparent areas never expose arbitrary hidden colours;
* palette, CMYK, YCbCr and the other modes go through Pillow's own conversion.

Pixels are used as stored (EXIF orientation is not applied), and only the first frame of a
multi-frame file is read.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lae_vbr.errors import LaeVbrError

__all__ = [
    "IMAGE_FORMATS",
    "DataError",
    "DataWarning",
    "check_image",
    "list_images",
    "load_rgb_image",
]

#: Formats accepted in image folders, recognised by content (Pillow's format names; PGM/PBM
#: are "PPM"). Lossy palette formats such as GIF are left out on purpose.
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "PPM", "BMP", "TIFF"})

#: How many skipped names a warning or error spells out before summarising the rest.
_MAX_NAMED = 20

_NATIVE_16 = ";16L" if sys.byteorder == "little" else ";16B"
_OTHER_ENDIAN = {";16B": ";16L", ";16L": ";16B", ";16N": ";16B" if _NATIVE_16 == ";16L" else ";16L"}


class DataError(LaeVbrError):
    """Input data that cannot be used: a missing or empty folder, an unreadable image."""


class DataWarning(UserWarning):
    """Files that were skipped because they could not be read."""


# -- reading ----------------------------------------------------------------------------------
def load_rgb_image(path: str | Path) -> np.ndarray:
    """Read any image Pillow decodes as ``uint8`` RGB of shape (H, W, 3).

    Raises DataError, naming the file, when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}; check the path")
    try:
        with Image.open(path) as im:
            return _to_rgb(im, path)
    except DataError:
        raise
    except Exception as err:  # Pillow raises many kinds on corrupt data; all mean "unreadable"
        raise DataError(
            f"cannot read image {path} ({_reason(err)}); fix or remove the file"
        ) from err


def _to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    peak: float = 255
    if im.mode in ("RGB", "RGBA") and (wide := _read_16bit(im, path)) is not None:
        arr, peak = wide, 65535
    elif im.mode.startswith("I;16"):
        arr, peak = np.asarray(im), 65535
    elif im.mode == "I":
        arr = np.asarray(im)
        peak = 255 if arr.size == 0 or arr.max() <= 255 else 65535
        arr = np.clip(arr, 0, peak)
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im), nan=0.0, posinf=0.0, neginf=0.0)
        peak = 1.0 if arr.size == 0 or arr.max() <= 1.0 else 255.0
        arr = np.clip(arr, 0.0, peak)
    elif im.mode in ("1", "L", "P", "RGB") and "transparency" in im.info:
        arr = np.asarray(im.convert("RGBA"))
    elif im.mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
    else:  # palette, CMYK, YCbCr, premultiplied alpha, ...: Pillow's own conversion
        has_alpha = im.mode in ("PA", "La", "RGBa")
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    return _to_uint8_rgb(arr, peak)


def _to_uint8_rgb(arr: np.ndarray, peak: float) -> np.ndarray:
    """(H, W[, C]) values in [0, peak], C in {1, 2, 3, 4} with alpha last -> uint8 (H, W, 3)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    color, alpha = (arr[..., :-1], arr[..., -1:]) if channels in (2, 4) else (arr, None)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if alpha is not None:
        a = alpha.astype(np.float64) / peak
        rgb = color.astype(np.float64) / peak * a + (1.0 - a)  # composite onto white
        return np.rint(rgb * 255).astype(np.uint8)
    if color.dtype == np.uint8:
        return np.array(color, order="C")  # a writable copy: Pillow's buffers are read-only
    if peak == 65535:  # exact integer rounding: round(v * 255 / 65535) = round(v / 257)
        return ((color.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.rint(color.astype(np.float64) * (255 / peak)).astype(np.uint8)


def _read_16bit(im: Image.Image, path: Path) -> np.ndarray | None:
    """Full 16-bit values of a 16-bit RGB(A)/LA file that Pillow decodes to 8 bits, else None.

    Pillow keeps only the high byte of each sample. The same tiles are decoded again with the
    opposite byte order, which yields the low bytes (a PNG grey+alpha file is decoded as raw
    RGBA bytes instead, as no such unpacker exists); high and low are then joined.
    """
    rawmode = _tile_rawmode(im)
    if rawmode is None or rawmode[-4:] not in _OTHER_ENDIAN:
        return None
    if rawmode == "LA;16B":  # PNG grey+alpha: bytes are L-hi, L-lo, A-hi, A-lo
        raw = _decode_with_rawmode(path, "RGBA").astype(np.uint16)
        return (raw[..., 0::2] << 8) | raw[..., 1::2]
    try:
        low = _decode_with_rawmode(path, rawmode[:-4] + _OTHER_ENDIAN[rawmode[-4:]])
    except (ValueError, OSError):  # no unpacker for this layout: keep Pillow's 8 bits
        return None
    high = np.asarray(im)
    return (high.astype(np.uint16) << 8) | low


def _tile_rawmode(im: Image.Image) -> str | None:
    tiles = getattr(im, "tile", None) or []
    modes = {_args_rawmode(tile.args) for tile in tiles}
    return modes.pop() if len(modes) == 1 else None


def _args_rawmode(args: object) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _decode_with_rawmode(path: Path, rawmode: str) -> np.ndarray:
    with Image.open(path) as im:
        im.tile = [
            tile._replace(args=rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:]))
            for tile in im.tile
        ]
        im.load()
        return np.asarray(im)


# -- listing ----------------------------------------------------------------------------------
def list_images(folder: str | Path, recursive: bool = False, key: str | None = None) -> list[Path]:
    """The readable images in ``folder``, sorted by path; hidden files are ignored.

    Files are recognised by content (see IMAGE_FORMATS), not by extension. Each one is opened
    and its header verified; the ones that fail are skipped with a single DataWarning naming
    them all. Raises DataError when the folder is missing or has no usable image; ``key`` is
    the config key the folder came from, which the message then names.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        fix = f"set {key}=<folder>" if key else "check the path or override it"
        raise DataError(f"image folder {folder} {what}; {fix}")
    candidates = sorted(_visible_files(folder, recursive))
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in candidates:
        reason = check_image(path)
        if reason is None:
            images.append(path)
        else:
            skipped.append((path, reason))
    if not images:
        detail = f": {_describe(skipped, folder)}" if skipped else ""
        raise DataError(
            f"no usable image in {folder} ({len(skipped)} unreadable file(s){detail}); "
            "point the data config at a folder of PNG/JPEG/WebP/PPM/BMP/TIFF images"
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable or unsupported file(s) in {folder}: "
            f"{_describe(skipped, folder)}",
            DataWarning,
            stacklevel=2,
        )
    return images


def check_image(path: Path) -> str | None:
    """Why ``path`` is not a usable image (cheap: open and verify, no decoding), or None."""
    try:
        with Image.open(path) as im:
            if im.format not in IMAGE_FORMATS:
                return f"unsupported format {im.format}"
            im.verify()
    except Exception as err:
        return _reason(err)
    return None


def _visible_files(folder: Path, recursive: bool) -> list[Path]:
    files = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            files.append(entry)
        elif recursive and entry.is_dir():
            files.extend(_visible_files(entry, recursive))
    return files


def _describe(skipped: Sequence[tuple[Path, str]], folder: Path) -> str:
    named = [f"{path.relative_to(folder)} ({reason})" for path, reason in skipped[:_MAX_NAMED]]
    more = len(skipped) - len(named)
    return ", ".join(named) + (f" and {more} more" if more else "")


def _reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not an image"
    if isinstance(err, OSError) and err.errno is not None:
        return err.strerror or type(err).__name__
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
