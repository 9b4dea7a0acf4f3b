"""One image at any λ index without entropy coding: the rate the entropy model predicts, the
image the decoder will return, and the real encode, all from one analysis pass.

Rate and quality control search the λ index with these and spend real encodes only to finish.
``y = g_a(x)`` does not depend on λ (the encoder-side LAE comes after it), so it is computed
once; each λ index then costs the LAE plus one of:

* :meth:`ImageProbe.estimate_bits`: the latent codec quantises as the encoder does and prices
  each symbol with the coder's own 16-bit tables (escapes included), which with the streams'
  word rounding and the header predicts the file's length. It differs from the file only
  where the model's float32 scales pick another table than the coder's float64 ones (a
  handful of symbols); Σ −log₂ p of the continuous likelihoods, by contrast, underestimates
  the file by 1.4–2.2 % on the bundled model, since the coder rounds each scale up to its
  table;
* :meth:`ImageProbe.reconstruct`: the same forward's ``y_hat`` through the decoder-side LAE and
  ``g_s``, the image the decoder returns (the coding is lossless; only the float arithmetic of
  the entropy parameters differs, see the tests);
* :meth:`ImageProbe.encode`: the latent codec's compress on the same LAE output, byte for byte
  the file :meth:`ImageCodec.encode` writes at that index, without running ``g_a`` again.

:class:`ProbeSet` does the same for several images coded at one λ index (a folder within a
byte budget). Each probe counts what it did (``estimates``, ``reconstructions``, ``encodes``),
so the studies report the cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lae_vbr.models.rans import stream_bytes

from .container import Bitstream, RateMap
from .errors import RateError
from .image_codec import ImageCodec
from .rate_model import RateModel, SetRateModel
from .regions import Region

__all__ = ["ImageProbe", "ProbeSet", "StreamSet", "psnr_8bit"]


def psnr_8bit(x: Tensor, x_hat: Tensor) -> float:
    """PSNR (dB) of two [0, 1] images compared as the 8-bit files a user has (the input as
    read, the output as ``decompress`` writes it): the convention of the evaluation."""
    a, b = ((t.detach().double().clamp(0, 1) * 255).round() for t in (x, x_hat))
    mse = float(torch.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


class ImageProbe:
    """One image, analysed once by the model, priced and reconstructed at any λ index.

    Args:
        codec: a variable-rate codec with an encoder-side LAE (RateError otherwise).
        x: the image, (1, 3, H, W) or (3, H, W) in [0, 1].
        coder: the latent codec in the coding arithmetic, when a caller coding several images
            has one (:meth:`~lae_vbr.models.analysis.LatentAnalysis.coder`).
        region: a region of interest (:mod:`.regions`): the λ index searched is then the
            background's, and every estimate, reconstruction and file is of the quality map
            ``region(index)`` above it (its bytes counted). The R-λ curve that guides the
            search stays the background's.
    """

    def __init__(
        self,
        codec: ImageCodec,
        x: Tensor,
        coder: nn.Module | None = None,
        region: Region | None = None,
    ) -> None:
        codec.rate_axis.require_variable("rate control")
        self.codec = codec
        self.x = codec.check_image(x).to(codec.device)
        self.rates = RateModel(codec.model, self.x)  # the model's analysis: g_a once
        self.analysis = self.rates.analysis
        self.num_pixels = self.rates.num_pixels
        self.coder = coder  # the latent codec in the coding arithmetic, made on first use
        self.region = region
        self._estimates: dict[float, float] = {}
        self.estimates = self.reconstructions = self.encodes = 0

    @property
    def num_latent_elements(self) -> int:
        """Elements of the image's latent (Σ log₂ m sums over them)."""
        return self.analysis.num_latent_elements

    def estimate_bits(self, lmbda_idx: float) -> float:
        """The file's bits at this index, predicted without coding: what the coder's tables
        charge for each symbol of y and z, rounded to the streams' words, plus the header;
        cached, since searches revisit indices."""
        idx = self.codec.check_rate(lmbda_idx)
        if idx not in self._estimates:
            rate_map = self._rate_map(idx)
            bits = self.analysis.coded_bits(self.codec.rate_input(idx, rate_map))
            lengths = [stream_bytes(float(bits[k][0])) for k in ("y", "z")]
            file_bytes = sum(lengths) + self._header_bytes(idx, rate_map, *lengths)
            self._estimates[idx] = 8.0 * file_bytes
            self.estimates += 1
        return self._estimates[idx]

    def forget_estimates(self) -> None:
        """Drop the cached estimates (to time an estimate rather than its cache)."""
        self._estimates.clear()

    def _rate_map(self, idx: float | None) -> RateMap | None:
        return None if self.region is None or idx is None else self.region(idx)

    def _header_bytes(
        self, idx: float | None, rate_map: RateMap | None, y_bytes: int, z_bytes: int
    ) -> int:
        """Header, quality map and CRC of a file with streams of these lengths (the varints
        grow with them)."""
        strings = [[bytes(n)] for n in (y_bytes, z_bytes)]
        encoding = {"strings": strings, "shape": self.x.shape[-2:], "symbols_crc": [0]}
        encoding["arithmetic"] = self.codec.arithmetic
        stream = self.codec.pack(encoding, idx, rate_map)
        return stream.num_bytes - y_bytes - z_bytes

    def reconstruct(self, lmbda_idx: float) -> Tensor:
        """The decoded image at this index, (1, 3, H, W) in [0, 1], without coding."""
        idx = self.codec.check_rate(lmbda_idx)
        x_hat = self.analysis.reconstruct(self.codec.rate_input(idx, self._rate_map(idx)))
        self.reconstructions += 1
        return x_hat

    def psnr(self, lmbda_idx: float) -> float:
        """PSNR (dB, 8-bit) of :meth:`reconstruct` against the image."""
        return psnr_8bit(self.x, self.reconstruct(lmbda_idx))

    def encode(self, lmbda_idx: float) -> Bitstream:
        """The real file at this index (what ``codec.encode(x, lmbda_idx)`` writes)."""
        idx = self.codec.check_rate(lmbda_idx)
        if self.coder is None:
            self.coder = self.analysis.coder(self.codec.arithmetic)
        rate_map = self._rate_map(idx)
        rate = self.codec.rate_input(idx, rate_map)
        coded = self.analysis.compress(rate, self.codec.arithmetic, coder=self.coder)
        self.encodes += 1
        return self.codec.pack(coded, idx, rate_map)


@dataclass(frozen=True)
class StreamSet:
    """The files of a set of images coded at one λ index."""

    streams: tuple[Bitstream, ...]

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.streams)

    @property
    def num_pixels(self) -> int:
        return sum(s.width * s.height for s in self.streams)

    @property
    def bpp(self) -> float:
        return 8 * self.num_bytes / self.num_pixels

    @property
    def lmbda_idx(self) -> float | None:
        return self.streams[0].lmbda_idx


class ProbeSet:
    """Several images priced and coded together at one λ index (equal slope for all)."""

    def __init__(self, codec: ImageCodec, images: Sequence[Tensor]) -> None:
        if not images:
            raise RateError("a set of images to code needs at least one image")
        first = ImageProbe(codec, images[0])
        first.coder = first.analysis.coder(codec.arithmetic)  # one copy serves every image
        self.probes = [first, *(ImageProbe(codec, x, first.coder) for x in images[1:])]
        self.rates = SetRateModel([p.rates for p in self.probes])
        self.num_pixels = self.rates.num_pixels

    def estimate_bits(self, lmbda_idx: float) -> float:
        return sum(p.estimate_bits(lmbda_idx) for p in self.probes)

    def encode(self, lmbda_idx: float) -> StreamSet:
        return StreamSet(tuple(p.encode(lmbda_idx) for p in self.probes))

    @property
    def estimates(self) -> int:
        return sum(p.estimates for p in self.probes)

    @property
    def encodes(self) -> int:
        return sum(p.encodes for p in self.probes)
