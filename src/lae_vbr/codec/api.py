"""Coding images with a loaded codec: tensors and image files to and from :class:`Bitstream`.

:class:`ImageCodec` prepares a :class:`~lae_vbr.models.registry.LoadedCodec` once (entropy
tables, weights digest) and then encodes and decodes any number of images; evaluation, rate
control and latent refinement build on it (:meth:`ImageCodec.pack` wraps strings they
produce themselves). Decoding checks the file against the model and the size limits before
any tensor is allocated.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.resources
import io
import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compressai.models import CompressionModel
from PIL import Image
from torch import Tensor, nn

from lae_vbr.models.registry import LoadedCodec, load_codec
from lae_vbr.models.state_dict import CheckpointError
from lae_vbr.models.vbr import VariableRateCodec

from .container import DIGEST_SIZE, Bitstream, ModelId, read_bitstream, to_float32

__all__ = [
    "INPUT_FORMATS",
    "MAX_PIXELS",
    "Z_STRIDE",
    "CodecError",
    "DecodeError",
    "ImageCodec",
    "ImageError",
    "ModelMismatchError",
    "RateError",
    "compress_file",
    "decompress_file",
    "default_checkpoint",
    "index_to_lmbda",
    "latent_shape",
    "lmbda_to_index",
    "pad_multiple",
    "read_image",
    "to_uint8",
    "weights_digest",
    "write_png",
]

#: Largest image (height × width) encoded or decoded by default: 32 Mpx. Decoding needs
#: memory in proportion, so a header may not ask for more than this.
MAX_PIXELS = 1 << 25
#: Downsampling from the padded image to z: 16 in g_a, 4 in h_a (TCM and CompressAI's models).
Z_STRIDE = 64
#: Entropy-coder tables rebuilt by ``update()``; left out of the digest, so it does not depend
#: on whether a checkpoint was saved before or after them.
_DERIVED_BUFFERS = frozenset({"_quantized_cdf", "_offset", "_cdf_length", "scale_table"})
#: Input formats (Pillow names; PGM/PBM count as PPM).
INPUT_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "PPM"})


class CodecError(ValueError):
    """Base of the errors raised for a request the codec cannot carry out."""


class RateError(CodecError):
    """A rate setting the model cannot use (missing, out of range, or given to a fixed-rate
    model)."""


class ImageError(CodecError):
    """An input image that cannot be read or is too large."""


class DecodeError(CodecError):
    """A well-formed file that this model cannot decode."""


class ModelMismatchError(DecodeError):
    """The file was written by a model with other weights."""


def weights_digest(weights: nn.Module | Mapping[str, Tensor]) -> bytes:
    """The first 8 bytes of SHA-256 over the weights: identifies a model in the container.

    Keys in sorted order; per entry the key, its shape and its values, floating point as
    little-endian float32 and integers as int64, so an fp16 bundle and the float32 model
    loaded from it hash the same. Entropy-coder tables derived by ``update()`` are skipped.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    sha = hashlib.sha256()
    for key in sorted(state):
        if key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        t = state[key].detach().cpu()
        floating = t.is_floating_point()
        array = t.to(torch.float32 if floating else torch.int64).contiguous().numpy()
        array = array.astype("<f4" if floating else "<i8", copy=False).reshape(-1)
        sha.update(f"{key}:{tuple(t.shape)}".encode())
        sha.update(memoryview(array).cast("B"))
    return sha.digest()[:DIGEST_SIZE]


def lmbda_to_index(lmbdas: Sequence[float], lmbda: float) -> float:
    """The fractional λ index of a λ value: log-linear interpolation over the trained set."""
    values = [float(v) for v in lmbdas]
    if len(values) < 2:
        raise RateError("mapping λ to an index needs at least two trained λ values")
    lo, hi = min(values), max(values)
    if not (math.isfinite(lmbda) and lo <= lmbda <= hi):
        raise RateError(f"lmbda {lmbda:g} is outside the trained range [{lo:g}, {hi:g}]")
    if any(a >= b for a, b in pairwise(values)):
        if any(a <= b for a, b in pairwise(values)):
            raise RateError(f"the trained λ values {values} are not monotonic")
        return len(values) - 1 - lmbda_to_index(values[::-1], lmbda)
    i = min(bisect.bisect_right(values, lmbda) - 1, len(values) - 2)
    a, b = math.log(values[i]), math.log(values[i + 1])
    return i + (math.log(lmbda) - a) / (b - a)


def index_to_lmbda(lmbdas: Sequence[float], lmbda_idx: float) -> float:
    """The λ value of a fractional λ index (log-linear interpolation; inverse of
    :func:`lmbda_to_index`), e.g. the λ that latent refinement optimises for."""
    values = [float(v) for v in lmbdas]
    hi = len(values) - 1
    if not (math.isfinite(lmbda_idx) and 0 <= lmbda_idx <= hi):
        raise RateError(f"λ index {lmbda_idx:g} is outside the trained range [0, {hi}]")
    if float(lmbda_idx).is_integer():
        return values[int(lmbda_idx)]
    i = int(lmbda_idx)
    t = lmbda_idx - i
    return math.exp((1 - t) * math.log(values[i]) + t * math.log(values[i + 1]))


def pad_multiple(model: nn.Module) -> int:
    """What the model pads image sides to (TCM: 128; models without the attribute: 64)."""
    backbone = model.backbone if isinstance(model, VariableRateCodec) else model
    return int(getattr(backbone, "pad_multiple", Z_STRIDE))


def latent_shape(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """Height and width of z for an image: padded to the model's multiple, then / Z_STRIDE.

    Not stored in the file: height, width and the model (pinned by the digest) determine it.
    """
    multiple = pad_multiple(model)
    return (
        -(-height // multiple) * multiple // Z_STRIDE,
        -(-width // multiple) * multiple // Z_STRIDE,
    )


def default_checkpoint() -> Path:
    """The bundled demo model; CheckpointError when this installation has none."""
    resource = importlib.resources.files("lae_vbr").joinpath("assets", "demo.pt")
    if not resource.is_file():
        raise CheckpointError(
            "the bundled demo model (lae_vbr/assets/demo.pt) is not installed; "
            "pass --checkpoint PATH"
        )
    return Path(str(resource))


class ImageCodec:
    """A loaded codec ready to code images into :class:`Bitstream` objects and back.

    Args:
        loaded: the codec, e.g. from :func:`~lae_vbr.models.registry.load_codec`.
        max_pixels: largest image accepted for encoding and decoding.
    """

    def __init__(self, loaded: LoadedCodec, max_pixels: int = MAX_PIXELS) -> None:
        self.loaded = loaded
        self.model: CompressionModel = loaded.model.eval()
        self.model.update()
        self.max_pixels = max_pixels
        self.id = ModelId(loaded.name, weights_digest(self.model))

    @classmethod
    def load(cls, checkpoint: str | PathLike | None = None, **kwargs: Any) -> ImageCodec:
        """Load a checkpoint (default: the bundled demo model); raises CheckpointError."""
        return cls(load_codec(checkpoint or default_checkpoint()), **kwargs)

    @property
    def variable_rate(self) -> bool:
        return self.loaded.variable_rate

    @property
    def lmbdas(self) -> list[float]:
        return self.loaded.lmbdas

    @property
    def max_index(self) -> int:
        return len(self.lmbdas) - 1

    # -- rate -------------------------------------------------------------------------------
    def rate_index(self, quality: float | None = None, lmbda: float | None = None) -> float | None:
        """The λ index for a quality (itself a λ index) or a λ value; None for fixed rate."""
        given = [n for n, v in (("quality", quality), ("lmbda", lmbda)) if v is not None]
        if not self.variable_rate:
            if given:
                raise RateError(
                    f"model {self.id} is fixed-rate; it takes no {' or '.join(given)} setting"
                )
            return None
        if len(given) != 1:
            raise RateError(
                f"model {self.id} is variable-rate: give one of quality (a λ index in "
                f"[0, {self.max_index}]) or lmbda (a λ in [{min(self.lmbdas):g}, "
                f"{max(self.lmbdas):g}])"
            )
        if lmbda is not None:
            return lmbda_to_index(self.lmbdas, lmbda)
        self._check_index(float(quality), "quality", RateError)
        return float(quality)

    def _check_index(self, idx: float, what: str, error: type[CodecError]) -> None:
        if not (math.isfinite(idx) and 0 <= idx <= self.max_index):
            raise error(f"{what} {idx:g} is outside the trained range [0, {self.max_index}]")

    # -- coding -----------------------------------------------------------------------------
    def encode(self, x: Tensor, lmbda_idx: float | None = None) -> Bitstream:
        """Code one image, (1, 3, H, W) or (3, H, W) in [0, 1]; the λ index is rounded to
        float32 first, as stored, so the decoder uses exactly the encoder's value."""
        x = x.unsqueeze(0) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
            raise ImageError(f"expected one float RGB image (1, 3, H, W), got {tuple(x.shape)}")
        self._check_size(*x.shape[-2:], ImageError)
        if self.variable_rate != (lmbda_idx is not None):
            raise RateError(
                f"model {self.id} is {'variable' if self.variable_rate else 'fixed'}-rate: "
                f"λ index {'required' if self.variable_rate else 'not accepted'}"
            )
        if lmbda_idx is not None:
            lmbda_idx = to_float32(lmbda_idx)
            self._check_index(lmbda_idx, "λ index", RateError)
        args = () if lmbda_idx is None else (lmbda_idx,)
        with torch.inference_mode():
            encoding = self.model.compress(x.to(self._device()), *args)
        return self.pack(encoding, lmbda_idx)

    def pack(self, encoding: Mapping[str, Any], lmbda_idx: float | None) -> Bitstream:
        """Wrap a one-image ``compress``-style result (``strings`` = [y, z], ``shape``,
        ``image_size``) coded at ``lmbda_idx``, e.g. by latent refinement."""
        (y_string,), (z_string,) = encoding["strings"]
        height, width = (int(v) for v in encoding["image_size"])
        expected = latent_shape(self.model, height, width)
        if tuple(encoding["shape"]) != expected:
            raise ValueError(
                f"z shape {tuple(encoding['shape'])} of a {width}×{height} image differs from "
                f"the {expected} the decoder assumes (padding to {pad_multiple(self.model)}, "
                f"stride {Z_STRIDE})"
            )
        return Bitstream(self.id, lmbda_idx, height, width, z_string, y_string)

    def check(self, stream: Bitstream) -> None:
        """Raise DecodeError unless this model can decode ``stream`` within the limits."""
        if stream.model.digest != self.id.digest:
            raise ModelMismatchError(
                f"the file was written by model {stream.model}, but the checkpoint holds "
                f"model {self.id}; decompress with the checkpoint that compressed it"
            )
        if stream.variable_rate != self.variable_rate:
            has = "has a λ index" if stream.variable_rate else "has no λ index"
            kind = "variable" if self.variable_rate else "fixed"
            raise DecodeError(f"the file {has}, but model {self.id} is {kind}-rate")
        if stream.lmbda_idx is not None:
            self._check_index(stream.lmbda_idx, "the file's λ index", DecodeError)
        self._check_size(stream.height, stream.width, DecodeError)

    def decode(self, stream: Bitstream) -> Tensor:
        """The reconstruction, (1, 3, H, W) in [0, 1], of a checked stream."""
        self.check(stream)
        shape = latent_shape(self.model, stream.height, stream.width)
        strings = [[stream.y_string], [stream.z_string]]
        args = () if stream.lmbda_idx is None else (stream.lmbda_idx,)
        with torch.inference_mode():
            out = self.model.decompress(
                strings, shape, *args, image_size=(stream.height, stream.width)
            )
        x_hat = out["x_hat"]
        if not torch.isfinite(x_hat).all():
            raise DecodeError("the decoded image is not finite; the streams are corrupt")
        return x_hat

    # -- helpers ----------------------------------------------------------------------------
    def _check_size(self, height: int, width: int, error: type[CodecError]) -> None:
        if height < 1 or width < 1 or height * width > self.max_pixels:
            raise error(
                f"image size {width}×{height} is outside the limit of {self.max_pixels} pixels"
            )

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


# -- image files ------------------------------------------------------------------------------
def read_image(path: str | PathLike, max_pixels: int = MAX_PIXELS) -> Tensor:
    """An image file as a float (1, 3, H, W) tensor in [0, 1] (8-bit RGB, see
    :func:`lae_vbr.data.load_rgb_image`); its size is checked before it is decoded."""
    from lae_vbr.data.images import DataError, load_rgb_image

    path = Path(path)
    try:
        with Image.open(path) as im:
            fmt, (width, height) = im.format, im.size
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ImageError(f"cannot read image {path}: not a PNG, JPEG, WebP or PPM file") from err
    if fmt not in INPUT_FORMATS:
        raise ImageError(f"{path} is a {fmt} image; use PNG, JPEG, WebP or PPM")
    if width * height > max_pixels:
        raise ImageError(f"{path} is {width}×{height}, above the limit of {max_pixels} pixels")
    try:
        array = load_rgb_image(path)
    except DataError as err:
        raise ImageError(str(err)) from err
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def to_uint8(x: Tensor) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) image in [0, 1] as (H, W, 3) uint8, rounded to nearest."""
    x = x.squeeze(0) if x.dim() == 4 else x
    return x.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def write_png(x: Tensor, path: str | PathLike) -> Path:
    """Save an image tensor as an 8-bit RGB PNG (encoded in memory, then written)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(to_uint8(x.cpu()))).save(buffer, format="PNG")
    path = Path(path)
    path.write_bytes(buffer.getvalue())
    return path


def compress_file(
    codec: ImageCodec, src: str | PathLike, dst: str | PathLike, lmbda_idx: float | None
) -> Bitstream:
    """Read an image, code it at ``lmbda_idx`` and write the container to ``dst``."""
    stream = codec.encode(read_image(src, codec.max_pixels), lmbda_idx)
    stream.write(dst)
    return stream


def decompress_file(codec: ImageCodec, src: str | PathLike, dst: str | PathLike) -> Bitstream:
    """Read and check a container, decode it and write the image to ``dst`` as PNG."""
    stream = read_bitstream(src)
    write_png(codec.decode(stream), dst)
    return stream
