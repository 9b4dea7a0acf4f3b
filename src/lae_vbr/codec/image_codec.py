"""Coding images with a loaded model: tensors to and from :class:`Bitstream`.

:class:`ImageCodec` prepares a :class:`~lae_vbr.models.registry.LoadedCodec` once (entropy
tables, weights digest) and then encodes and decodes any number of images; evaluation, rate
control and latent refinement build on it (:meth:`ImageCodec.pack` wraps strings they produce
themselves). It holds the rule for rate settings at the file level, in one place
(:meth:`ImageCodec.check_rate`): a variable-rate model codes at exactly one λ index, which the
file records; a fixed-rate model takes none. Decoding checks the file against the model and the
size limits before any tensor is allocated.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lae_vbr.models.composed import LearnedCodec
from lae_vbr.models.rans import StreamError, SymbolsMismatchError, tables_crc
from lae_vbr.models.registry import LoadedCodec, load_codec
from lae_vbr.models.state_dict import CheckpointError
from lae_vbr.rate_axis import RateAxis

from .container import MAP_LEVELS_PER_INDEX, Bitstream, ModelId, RateMap
from .digest import weights_digest
from .errors import CodecError, DecodeError, ImageError, ModelMismatchError, RateError
from .images import MAX_PIXELS

__all__ = ["ImageCodec", "default_checkpoint"]


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
        self.model: LearnedCodec = loaded.model.eval()
        self.model.update()
        self.max_pixels = max_pixels
        self.id = ModelId(loaded.name, weights_digest(self.model))
        #: the CDF tables this model codes with; files record it and are checked against it
        self.tables_crc = tables_crc(self.model)
        #: how files are written: the model's preferred arithmetic (float64 where it can)
        self.arithmetic = self.model.arithmetics[-1]
        #: the rate settings the model takes (every rate question is asked of it)
        self.rate_axis = RateAxis(str(self.id), self.model.num_lmbdas, tuple(loaded.lmbdas))

    @classmethod
    def load(
        cls,
        checkpoint: str | PathLike | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> ImageCodec:
        """Load a checkpoint (default: the bundled demo model); raises CheckpointError.

        ``device`` runs the networks there (default: the CPU); entropy coding stays on the CPU.
        """
        loaded = load_codec(checkpoint or default_checkpoint())
        if device is not None:
            loaded.model.to(device)
        return cls(loaded, **kwargs)

    @property
    def lmbdas(self) -> list[float]:
        return self.loaded.lmbdas

    @property
    def max_index(self) -> int:
        return self.rate_axis.max_index

    # -- rate -------------------------------------------------------------------------------
    def check_rate(self, lmbda_idx: float | None) -> float | None:
        """The λ index a file records (float32), or None for a fixed-rate model; RateError
        unless a variable-rate model gets exactly one index in range and a fixed-rate none."""
        value = self.rate_axis.check_index(lmbda_idx)
        if value is not None:
            self.model.lmbda_input(value, 1)  # the models' range rule
        return value

    def rate_index(self, quality: float | None = None, lmbda: float | None = None) -> float | None:
        """The λ index for a quality (itself a λ index) or a λ value; None for fixed rate."""
        return self.rate_axis.index(quality, lmbda)

    # -- quality maps -----------------------------------------------------------------------
    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        """The grid a quality map of an image of this size lies on (the model's latent)."""
        return self.model.latent_shape(height, width)

    def check_rate_map(
        self, lmbda_idx: float | None, rate_map: RateMap, size: tuple[int, int]
    ) -> None:
        """RateError unless this model takes quality maps and ``rate_map``, based at
        ``lmbda_idx``, lies on its latent grid for an image of ``size`` and within range."""
        if not self.model.takes_rate_map:
            raise self.model.no_rate_map_error()
        grid = self.latent_shape(*size)
        if (rate_map.rows, rate_map.cols) != grid:
            raise RateError(
                f"the quality map is {rate_map.rows}×{rate_map.cols} but the model's latent grid "
                f"for a {size[1]}×{size[0]} image is {grid[0]}×{grid[1]}"
            )
        if lmbda_idx is None or lmbda_idx + rate_map.highest_offset > self.max_index:
            raise RateError(
                f"the quality map reaches λ index {(lmbda_idx or 0) + rate_map.highest_offset:g}, "
                f"beyond the trained range [0, {self.max_index}]"
            )

    def rate_input(self, lmbda_idx: float | None, rate_map: RateMap | None = None) -> Any:
        """What the model is given for a file's rate: its λ index, or with a quality map the
        λ-index map (1, 1, rows, cols) = base + level / 16, in float32 (the encoder's and the
        decoder's are the same bits)."""
        if rate_map is None:
            return lmbda_idx
        levels = torch.frombuffer(bytearray(rate_map.levels), dtype=torch.uint8)
        offsets = levels.float().div_(MAP_LEVELS_PER_INDEX)
        grid = offsets.add_(torch.tensor(lmbda_idx, dtype=torch.float32))
        return grid.reshape(1, 1, rate_map.rows, rate_map.cols).to(self.device)

    # -- coding -----------------------------------------------------------------------------
    def encode(
        self, x: Tensor, lmbda_idx: float | None = None, rate_map: RateMap | None = None
    ) -> Bitstream:
        """Code one image, (1, 3, H, W) or (3, H, W) in [0, 1], at the λ index the file will
        record (rounded to float32 first, so the decoder uses exactly the encoder's value).
        With ``rate_map`` (:mod:`.regions`) the λ index is the map's base and each latent
        position is coded at its own index (region-of-interest coding)."""
        x = self.check_image(x)
        lmbda_idx = self.check_rate(lmbda_idx)
        if rate_map is not None:
            self.check_rate_map(lmbda_idx, rate_map, tuple(x.shape[-2:]))
        rate = self.rate_input(lmbda_idx, rate_map)
        with torch.inference_mode():
            encoding = self.model.compress(x.to(self.device), rate, self.arithmetic)
        return self.pack(encoding, lmbda_idx, rate_map)

    def check_image(self, x: Tensor) -> Tensor:
        """``x`` as one (1, 3, H, W) float image within the size limit; ImageError if not."""
        x = x.unsqueeze(0) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
            raise ImageError(f"expected one float RGB image (1, 3, H, W), got {tuple(x.shape)}")
        self._check_size(*x.shape[-2:], ImageError)
        return x

    def pack(
        self,
        encoding: Mapping[str, Any],
        lmbda_idx: float | None,
        rate_map: RateMap | None = None,
    ) -> Bitstream:
        """Wrap a one-image ``compress`` result (``strings`` = [y, z], ``shape`` = the image
        size, ``arithmetic`` and ``symbols_crc`` where the model reports them) coded at
        ``lmbda_idx`` (and ``rate_map`` above it), e.g. by latent refinement."""
        (y_string,), (z_string,) = encoding["strings"]
        height, width = (int(v) for v in encoding["shape"])
        crcs = encoding.get("symbols_crc")
        return Bitstream(
            self.id,
            lmbda_idx,
            height,
            width,
            z_string,
            y_string,
            arithmetic=encoding.get("arithmetic", "float32"),
            tables_crc=None if crcs is None else self.tables_crc,
            symbols_crc=None if crcs is None else int(crcs[0]),
            rate_map=rate_map,
        )

    def check(self, stream: Bitstream) -> None:
        """Raise DecodeError unless this model can decode ``stream`` within the limits."""
        if stream.model.digest != self.id.digest:
            raise ModelMismatchError(
                f"the file was written by model {stream.model}, but the checkpoint holds "
                f"model {self.id}; decompress with the checkpoint that compressed it"
            )
        if stream.variable_rate != self.rate_axis.variable:
            has = "has a λ index" if stream.variable_rate else "has no λ index"
            kind = "variable" if self.rate_axis.variable else "fixed"
            raise DecodeError(f"the file {has}, but model {self.id} is {kind}-rate")
        if stream.lmbda_idx is not None and not 0 <= stream.lmbda_idx <= self.max_index:
            raise DecodeError(
                f"the file's λ index {stream.lmbda_idx:g} is outside the trained range "
                f"[0, {self.max_index}]"
            )
        self._check_size(stream.height, stream.width, DecodeError)
        if stream.rate_map is not None:
            try:
                size = (stream.height, stream.width)
                self.check_rate_map(stream.lmbda_idx, stream.rate_map, size)
            except RateError as err:
                raise DecodeError(f"the file's quality map does not fit the model: {err}") from None
        if stream.arithmetic not in self.model.arithmetics:
            raise DecodeError(f"model {self.id} cannot compute in {stream.arithmetic}")
        if stream.checked and stream.tables_crc != self.tables_crc:
            raise DecodeError(
                "the model's entropy-coder tables differ from those the file was coded with "
                "(rebuilt on another machine?); decode with the checkpoint file that wrote it"
            )

    def decode(self, stream: Bitstream) -> Tensor:
        """The reconstruction, (1, 3, H, W) in [0, 1], of a checked stream."""
        self.check(stream)
        strings = [[stream.y_string], [stream.z_string]]
        size = (stream.height, stream.width)
        check = {"symbols_crc": [stream.symbols_crc]} if stream.checked else {}
        try:
            with torch.inference_mode():
                rate = self.rate_input(stream.lmbda_idx, stream.rate_map)
                out = self.model.decompress(strings, size, rate, stream.arithmetic, **check)
        except SymbolsMismatchError as err:
            raise DecodeError(
                f"{err}: the file is damaged, or this decoder did not reproduce the encoder's "
                "arithmetic"
            ) from None
        except StreamError as err:
            raise DecodeError(f"the file's entropy-coded data is damaged: {err}") from None
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

    @property
    def device(self) -> torch.device:
        """Where the networks run (entropy coding stays on the CPU)."""
        return next(self.model.parameters()).device
