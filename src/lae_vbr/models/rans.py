"""Entropy decoding that no input can break: a bounds-checked rANS decoder and the entropy
models that use it.

CompressAI's ``RansDecoder`` trusts its input: a damaged or crafted stream makes it read past
its buffer (undefined behaviour) or loop for as long as the garbage says. The decoder of
:mod:`lae_vbr.models._rans` (C, built with the package) implements the same algorithm and
constants, so it decodes every stream CompressAI's encoder writes to the same symbols, but it
checks every read against the end of the stream, every table index against the tables and
every escape length against what an int32 holds, and raises ``ValueError`` otherwise. Its
loops are bounded by the stream's length and the symbol count, so a decode always ends.

:class:`CheckedEntropyBottleneck` and :class:`CheckedGaussianConditional` are CompressAI's
entropy models with ``decompress`` running on it (same parameters, buffers and state-dict
keys); :func:`use_checked_decoding` gives CompressAI's own models the same.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from torch import Tensor, nn

from lae_vbr.errors import LaeVbrError

from . import _rans
from .compressai_compat import bottleneck_indexes, bottleneck_medians, cdf_tables

__all__ = [
    "CdfTables",
    "CheckedEntropyBottleneck",
    "CheckedGaussianConditional",
    "CheckedRansDecoder",
    "MAX_ESCAPE_RAW",
    "StreamError",
    "SymbolsMismatchError",
    "bottleneck_coded_bits",
    "bottleneck_crcs",
    "coded_bits",
    "stream_bytes",
    "tables_crc",
    "symbols_crc",
    "UncodableLatentError",
    "check_codable",
    "use_checked_decoding",
]

#: Probabilities are 16-bit: every table ends at 1 << 16.
_PRECISION = 16
#: The coder's escape: a value outside a table is coded as the table's last symbol, then its
#: bit length and bits in chunks of 4 bits (each chunk costs exactly 4 bits); CompressAI's
#: ``bypass_precision`` and ``max_bypass_val``.
_BYPASS_BITS = 4
_MAX_BYPASS = (1 << _BYPASS_BITS) - 1


class StreamError(LaeVbrError):
    """An entropy-coded stream that cannot be decoded (damaged, truncated or crafted)."""


class SymbolsMismatchError(StreamError):
    """Decoded symbols whose checksum differs from the encoder's: a damaged stream, or a
    decoder that did not reproduce the encoder's arithmetic."""


@dataclass(frozen=True)
class CdfTables:
    """An entropy model's quantised CDF tables, checked once, as the decoder reads them."""

    cdfs: np.ndarray  # int32, rows × width, C-contiguous
    sizes: np.ndarray  # int32, entries used per row
    offsets: np.ndarray  # int32, value of each row's first symbol

    @classmethod
    def of(cls, model: EntropyModel) -> CdfTables:
        """The tables of ``model`` (after ``update()``); ValueError unless each is a valid
        16-bit CDF (0 … 65536, strictly increasing)."""
        cdf, lengths, first = cdf_tables(model)
        cdfs = np.ascontiguousarray(cdf.detach().cpu().numpy(), np.int32)
        sizes = np.ascontiguousarray(lengths.detach().cpu().reshape(-1), np.int32)
        offsets = np.ascontiguousarray(first.detach().cpu().reshape(-1), np.int32)
        if cdfs.ndim != 2 or not (len(sizes) == len(offsets) == len(cdfs) > 0):
            raise ValueError("the entropy model has no CDF tables; call update() first")
        width = cdfs.shape[1]
        for row, size in zip(cdfs, sizes, strict=True):
            used = row[: int(size)]
            if not (2 <= size <= width and used[0] == 0 and used[-1] == 1 << _PRECISION):
                raise ValueError("an entropy model's CDF table is not a 16-bit CDF")
            if np.any(np.diff(used) <= 0):
                raise ValueError("an entropy model's CDF table is not strictly increasing")
        return cls(cdfs, sizes, offsets)

    def digest(self) -> int:
        """CRC-32 of the tables: two models code alike only if theirs are equal."""
        crc = zlib.crc32(self.cdfs.astype("<i4").tobytes())
        crc = zlib.crc32(self.sizes.astype("<i4").tobytes(), crc)
        return zlib.crc32(self.offsets.astype("<i4").tobytes(), crc)


class CheckedRansDecoder:
    """Decodes one rANS stream in order, in as many calls as needed (e.g. slice by slice)."""

    def __init__(self, stream: bytes, tables: CdfTables) -> None:
        self.stream = bytes(stream)
        self.tables = tables
        try:
            self.pos, self.state = _rans.init(self.stream)
        except ValueError as err:
            raise StreamError(str(err)) from None

    def decode(self, indexes: np.ndarray | Tensor) -> np.ndarray:
        """The next ``len(indexes)`` values, each coded with table ``indexes[i]``."""
        if isinstance(indexes, Tensor):
            indexes = indexes.detach().cpu().numpy()
        idx = np.ascontiguousarray(np.asarray(indexes).reshape(-1), np.int32)
        out = np.empty_like(idx)
        t = self.tables
        try:
            self.pos, self.state = _rans.decode(
                self.stream, self.pos, self.state, idx, t.cdfs, t.cdfs.shape[1], t.sizes,
                t.offsets, out,
            )  # fmt: skip
        except ValueError as err:
            raise StreamError(str(err)) from None
        return out

    def finish(self) -> None:
        """StreamError unless the stream was read to its end: the encoder writes exactly
        what its symbols need, so leftover words mean a damaged or foreign stream."""
        if self.pos * 4 != len(self.stream):
            unread = len(self.stream) - 4 * self.pos
            raise StreamError(f"{unread} bytes of the rANS stream were left unread")


class _CheckedDecoding(EntropyModel):
    """``EntropyModel.decompress`` on the bounds-checked decoder (CompressAI's semantics)."""

    def decompress(
        self,
        strings: Sequence[bytes],
        indexes: Tensor,
        dtype: torch.dtype = torch.float,
        means: Tensor | None = None,
    ) -> Tensor:
        if not isinstance(strings, tuple | list) or len(strings) != indexes.size(0):
            raise ValueError("one string per batch element is needed")
        if indexes.dim() < 2 or (means is not None and means.shape[:2] != indexes.shape[:2]):
            raise ValueError("invalid indexes or means for decompress")
        tables = CdfTables.of(self)
        outputs = torch.empty(indexes.shape, dtype=torch.int32)
        for i, string in enumerate(strings):
            decoder = CheckedRansDecoder(string, tables)
            outputs[i] = torch.from_numpy(decoder.decode(indexes[i])).reshape(outputs[i].shape)
            decoder.finish()
        return self.dequantize(outputs.to(indexes.device), means, dtype)


#: Escaped values are coded in 4-bit chunks counted in a 32-bit integer; CompressAI's rANS
#: encoder never returns for a value whose count reaches 8 (its shift count wraps at 32), that
#: is from this raw value on, so :func:`check_codable` refuses anything that would reach it.
MAX_ESCAPE_RAW = 1 << 28


class UncodableLatentError(LaeVbrError):
    """A latent value beyond what the entropy coder can represent (a broken model or input)."""


def check_codable(model: EntropyModel, symbols: Tensor, indexes: Tensor) -> None:
    """UncodableLatentError unless the rANS encoder can code every symbol with CDF table
    ``indexes[i]`` of ``model`` (after ``update()``): an escaped value must stay below
    :data:`MAX_ESCAPE_RAW` (about ±2^27 away from its table). Checked before coding, since the
    encoder itself would loop forever."""
    _, table_lengths, first = cdf_tables(model)
    rows = indexes.reshape(-1).long()
    value = symbols.reshape(-1).long() - first.reshape(-1).long()[rows]
    escape_value = table_lengths.reshape(-1).long()[rows] - 2
    raw = torch.where(value < 0, -2 * value - 1, 2 * (value - escape_value))
    if bool((raw >= MAX_ESCAPE_RAW).any()):
        worst = int(symbols.reshape(-1).long().abs().max())
        raise UncodableLatentError(
            f"a latent value of {worst} is beyond what the entropy coder can represent (about "
            f"±{MAX_ESCAPE_RAW >> 1}); the model or its input is broken (non-finite or "
            "exploding activations)"
        )


class CheckedEntropyBottleneck(EntropyBottleneck, _CheckedDecoding):
    """CompressAI's EntropyBottleneck decoding with the bounds-checked decoder, and encoding
    only what its encoder can represent (:func:`check_codable`)."""

    def compress(self, x: Tensor) -> list[bytes]:  # type: ignore[override]
        symbols = self.quantize(x, "symbols", bottleneck_medians(self))
        check_codable(self, symbols, bottleneck_indexes(self, x.size()))
        return super().compress(x)


class CheckedGaussianConditional(GaussianConditional, _CheckedDecoding):
    """CompressAI's GaussianConditional decoding with the bounds-checked decoder, and encoding
    only what its encoder can represent (:func:`check_codable`)."""

    def compress(self, inputs: Tensor, indexes: Tensor, means: Tensor | None = None) -> list[bytes]:
        check_codable(self, self.quantize(inputs, "symbols", means), indexes)
        return super().compress(inputs, indexes, means)

    def build_indexes(self, scales: Tensor) -> Tensor:
        """CompressAI's table index of each scale (the first table scale at or above the
        bounded scale, the last one beyond the table), by one binary search per scale
        rather than one pass over all scales per table entry: the same integers, a sixth
        of a rate estimate faster."""
        scales = self.lower_bound_scale(scales)
        table = self.scale_table[:-1].to(scales.dtype)
        return torch.searchsorted(table, scales.contiguous()).int()


def coded_bits(model: EntropyModel, symbols: Tensor, indexes: Tensor) -> Tensor:
    """The bits the rANS coder spends on each symbol coded with CDF table ``indexes[i]`` of
    ``model`` (after ``update()``), without coding: −log₂ of the 16-bit table probability, and
    for a value outside its table the escape symbol's plus the bypass chunks.

    This is what a file costs to within its rANS flush (:func:`stream_bytes`). Σ −log₂ p of
    the continuous likelihoods misses the coder's rounding of each scale up to its table and
    of each probability to 16 bits, which on small models is a few percent of the file.
    """
    cdf, table_lengths, first = cdf_tables(model)
    rows = indexes.long()
    table_bits = _PRECISION - torch.log2(cdf.long().diff(dim=1).clamp_min(1).double())
    lengths = table_lengths.reshape(-1).long()[rows]
    value = symbols.long() - first.reshape(-1).long()[rows]
    escape_value = lengths - 2
    escaped = (value < 0) | (value >= escape_value)
    flat = rows * table_bits.shape[1] + torch.where(escaped, escape_value, value)
    bits = table_bits.reshape(-1)[flat]
    if not bool(escaped.any()):
        return bits
    raw = torch.where(value < 0, -2 * value - 1, 2 * (value - escape_value)).clamp_min(0)
    chunks = torch.ceil(torch.log2(raw.double() + 1) / _BYPASS_BITS)  # bypass chunks of raw
    length_chunks = torch.div(chunks, _MAX_BYPASS, rounding_mode="floor") + 1
    escape_bits = _BYPASS_BITS * (chunks + length_chunks)
    return bits + torch.where(escaped, escape_bits, torch.zeros_like(bits))


def bottleneck_coded_bits(bottleneck: EntropyBottleneck, z: Tensor) -> tuple[Tensor, Tensor]:
    """``(z_hat, bits)``: the hyper-latent as the decoder will have it and, per image, what
    ``bottleneck.compress(z)`` spends on it (:func:`coded_bits`), without coding."""
    medians = bottleneck_medians(bottleneck)
    symbols = bottleneck.quantize(z, "symbols", medians)
    bits = coded_bits(bottleneck, symbols, bottleneck_indexes(bottleneck, z.size()))
    return bottleneck.dequantize(symbols, medians, z.dtype), bits.flatten(1).sum(1)


def stream_bytes(bits: float) -> int:
    """The length of a rANS stream whose symbols cost ``bits``: the coder writes 32-bit words
    and its flush adds its 64-bit state, less what the initial state already holds."""
    return 4 * (math.ceil(bits / 32) + 1)


def use_checked_decoding(module: nn.Module) -> nn.Module:
    """Give every ``EntropyBottleneck`` and ``GaussianConditional`` inside ``module`` (e.g. a
    CompressAI zoo model) the checked decoder and the bounded encoder: the instances become the
    checked subclasses, which add no state.

    What this covers is exactly the streams those entropy models decode themselves: z of every
    model, and y where the model decodes it through ``GaussianConditional.decompress`` (the
    hyperprior models, ``bmshj2018-hyperprior``, ``mbt2018-mean`` and their ``-vbr``
    versions). It does not reach a model that decodes y with its own loop over the rANS
    decoder: CompressAI's context models (``mbt2018``, ``cheng2020-*``) decode y serially in
    their ``decompress``, unchecked. This project never calls that: its
    :class:`~.compressai_backbone.CompressAIHyperprior` decodes their y with
    :class:`CheckedRansDecoder` (and the gain peer refuses context models)."""
    upgrades = {
        EntropyBottleneck: CheckedEntropyBottleneck,
        GaussianConditional: CheckedGaussianConditional,
    }
    for sub in module.modules():
        checked = upgrades.get(type(sub))
        if checked is not None:
            sub.__class__ = checked
    return module


def symbols_crc(parts: Iterable[Tensor | np.ndarray], crc: int = 0) -> int:
    """CRC-32 of integer symbols (int32, little-endian, in order): what the encoder coded, to
    compare with what a decoder read back."""
    for part in parts:
        array = part.detach().cpu().numpy() if isinstance(part, Tensor) else np.asarray(part)
        crc = zlib.crc32(np.ascontiguousarray(array.reshape(-1), "<i4").tobytes(), crc)
    return crc


def bottleneck_crcs(bottleneck: EntropyBottleneck, z_hat: Tensor) -> list[int]:
    """Per image, CRC-32 of the hyper-latent's symbols, ``round(z_hat − medians)``: the same
    integers on the encoder (after its own decode of z) and on the decoder."""
    symbols = torch.round(z_hat - bottleneck_medians(bottleneck).to(z_hat.dtype)).int()
    return [symbols_crc([image]) for image in symbols]


def tables_crc(module: nn.Module) -> int:
    """CRC-32 of the CDF tables of every entropy model in ``module``, in module order: a file
    records it, and a decoder with other tables (e.g. rebuilt on another machine) refuses it."""
    crc = 0
    for sub in module.modules():
        if isinstance(sub, EntropyModel):
            crc = zlib.crc32(CdfTables.of(sub).digest().to_bytes(4, "little"), crc)
    return crc
