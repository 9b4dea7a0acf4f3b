"""The ``.lae`` container: one compressed image as bytes (layout in ``docs/bitstream.md``).

Pure data: parsing needs neither torch nor the model, so ``lae-vbr info`` is instant and every
field can be checked before any tensor is allocated or any byte reaches the entropy decoder.
CompressAI's rANS decoder does no bounds checking (garbage can make it read past the end of a
stream and crash), so :meth:`Bitstream.from_bytes` rejects anything whose structure, sizes or
CRC-32 do not hold.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

from lae_vbr.atomic import write_atomic
from lae_vbr.errors import LaeVbrError

__all__ = [
    "DIGEST_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_FILE_BYTES",
    "MAX_NAME_BYTES",
    "MAX_SIDE",
    "Bitstream",
    "ContainerError",
    "ModelId",
    "RateMap",
    "read_bitstream",
    "to_float32",
]

MAGIC = b"LAE"
#: Version 2 records the arithmetic of the entropy parameters and checksums that detect a
#: decoder that does not reproduce the encoder; version 3 adds the quality map of
#: region-of-interest coding. A file is written in the lowest version that holds it (an image
#: coded at one λ index is a version 2 file, byte for byte as before); versions 1 to 3 are read.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
#: Quality-map levels per λ index: a map stores index × MAP_LEVELS_PER_INDEX as one byte.
MAP_LEVELS_PER_INDEX = 16
#: Largest side of a quality map (the latent grid of a MAX_SIDE image, padded).
MAX_MAP_SIDE = 4096
#: How the entropy parameters were computed (``lae_vbr.models.latent_codec.ARITHMETIC``).
ARITHMETIC_CODES = {"float32": 0, "float64": 1}
#: Bytes of the weights digest that identify a model (see ``lae_vbr.codec.digest.weights_digest``).
DIGEST_SIZE = 8
#: Longer model names are cut (at a character boundary) when a file is written.
MAX_NAME_BYTES = 32
#: Largest height or width the format accepts.
MAX_SIDE = 65535
#: Largest file :func:`read_bitstream` reads (256 MiB, over 60 bpp at the api's pixel limit).
MAX_FILE_BYTES = 1 << 28
#: A rANS stream is whole 32-bit words, at least the two of the final coder state.
_MIN_STREAM = 8
_VARIABLE_RATE = 0x01
_CHECKED = 0x02  # version 2: the tables digest and the symbols CRC follow the arithmetic
_RATE_MAP = 0x04  # version 3: a quality map's sizes follow the width, its bytes the header
_KNOWN_FLAGS = {
    1: _VARIABLE_RATE,
    2: _VARIABLE_RATE | _CHECKED,
    3: _VARIABLE_RATE | _CHECKED | _RATE_MAP,
}
_MAX_VARINT_BYTES = 5  # enough for any length below MAX_FILE_BYTES
_CRC = struct.Struct("<I")
_CRC_PAIR = struct.Struct("<II")
_FLOAT = struct.Struct("<f")


class ContainerError(LaeVbrError):
    """Bytes that are not a well-formed lae-vbr file (wrong magic or version, corrupt,
    truncated, or with impossible sizes)."""


@dataclass(frozen=True)
class ModelId:
    """Which model wrote a file: a short display name and the digest of its weights.

    Only the digest decides whether a model can decode a file; the name is for messages.
    """

    name: str
    digest: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _clean_name(self.name))
        if len(self.digest) != DIGEST_SIZE:
            raise ContainerError(f"model digest must be {DIGEST_SIZE} bytes")

    def __str__(self) -> str:
        return f"'{self.name}' (weights {self.digest.hex()})"


def _clean_name(name: str) -> str:
    """Printable, at most MAX_NAME_BYTES of UTF-8, cut at a character boundary."""
    text = "".join(c if c.isprintable() else "?" for c in name)
    raw = text.encode("utf-8")[:MAX_NAME_BYTES]
    return raw.decode("utf-8", errors="ignore")


def to_float32(value: float) -> float:
    """``value`` rounded to the float32 the header stores."""
    return _FLOAT.unpack(_FLOAT.pack(value))[0]


@dataclass(frozen=True)
class RateMap:
    """A quality map: one λ index per latent position, as offsets above the file's λ index.

    ``levels`` holds ``rows × cols`` bytes, row by row; level v puts its position at the file's
    λ index (the map's base, a float32 as in any variable-rate file) plus
    v / MAP_LEVELS_PER_INDEX. So the base stays continuous (rate control moves it as finely as
    for one index) and the offsets are small integers. In the file the levels are
    deflate-compressed (a box or a smooth map takes a few dozen bytes); their bytes count in the
    file's bit rate.
    """

    rows: int
    cols: int
    levels: bytes

    def __post_init__(self) -> None:
        _check_map_sides(self.rows, self.cols)
        if len(self.levels) != self.rows * self.cols:
            raise ContainerError(
                f"quality map of {self.rows}×{self.cols} needs {self.rows * self.cols} levels, "
                f"got {len(self.levels)}"
            )

    @property
    def highest_offset(self) -> float:
        """The largest offset above the base, in λ indices."""
        return max(self.levels) / MAP_LEVELS_PER_INDEX

    @property
    def roi_share(self) -> float:
        """Share of positions above the base (the region of interest)."""
        return sum(level > 0 for level in self.levels) / len(self.levels)

    def to_bytes(self) -> bytes:
        """The deflate stream of the levels (raw deflate, no zlib header)."""
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return packer.compress(self.levels) + packer.flush()

    @classmethod
    def from_bytes(cls, rows: int, cols: int, data: bytes) -> RateMap:
        """Inflate a map of ``rows × cols`` levels; ContainerError for anything else (the
        output is bounded by the declared size: no decompression bomb)."""
        _check_map_sides(rows, cols)  # before inflating: bounds the output
        expected = rows * cols
        unpacker = zlib.decompressobj(-15)
        try:
            levels = unpacker.decompress(data, expected + 1)
        except zlib.error as err:
            raise ContainerError(f"the quality map is corrupt ({err})") from None
        if len(levels) != expected or not unpacker.eof or unpacker.unused_data:
            raise ContainerError(
                f"the quality map does not hold exactly {expected} levels in {len(data)} bytes"
            )
        return cls(rows, cols, levels)


def _check_map_sides(rows: int, cols: int) -> None:
    for side, value in (("rows", rows), ("columns", cols)):
        if not 1 <= value <= MAX_MAP_SIDE:
            raise ContainerError(f"quality map {side} {value} is outside [1, {MAX_MAP_SIDE}]")


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, minimally encoded (the header's size fields)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass(frozen=True)
class Bitstream:
    """One coded image: who made it, at which λ index, its size, and the two rANS streams.

    ``lmbda_idx`` is None for fixed-rate models. It is stored as float32, so it is rounded to
    float32 on construction; encoders must code with ``stream.lmbda_idx`` (ImageCodec does).
    ``arithmetic`` says how the entropy parameters were computed; ``tables_crc`` (the model's
    CDF tables) and ``symbols_crc`` (the coded symbols) let the decoder prove it reproduced
    the encoder (None: not recorded, as in version 1 files). ``version`` is the format version
    the stream was read from; a file is written in the lowest version that holds it (3 with a
    quality map, else 2). ``rate_map``: the quality map of region-of-interest coding (the
    decoder-side LAE needs it); ``lmbda_idx`` is then the map's base (its lowest index).
    """

    model: ModelId
    lmbda_idx: float | None
    height: int
    width: int
    z_string: bytes
    y_string: bytes
    arithmetic: str = "float32"
    tables_crc: int | None = None
    symbols_crc: int | None = None
    rate_map: RateMap | None = None
    version: int = 0  # 0: the version it is written in (set on construction)

    def __post_init__(self) -> None:
        if self.lmbda_idx is not None:
            object.__setattr__(self, "lmbda_idx", to_float32(self.lmbda_idx))
        if not self.version:
            object.__setattr__(self, "version", self.write_version)
        self.validate()

    @property
    def variable_rate(self) -> bool:
        return self.lmbda_idx is not None

    @property
    def write_version(self) -> int:
        """The format version this stream is written in: the lowest that holds it."""
        return 3 if self.rate_map is not None else 2

    @cached_property
    def map_bytes(self) -> bytes:
        """The quality map as stored (empty without one)."""
        return b"" if self.rate_map is None else self.rate_map.to_bytes()

    @property
    def checked(self) -> bool:
        """Whether the file carries the checksums of the tables and symbols."""
        return self.tables_crc is not None

    # -- checks shared by writing and reading -------------------------------------------------
    def validate(self) -> None:
        """Raise ContainerError unless every field is within what the format allows."""
        if self.lmbda_idx is not None and not (
            math.isfinite(self.lmbda_idx) and self.lmbda_idx >= 0
        ):
            raise ContainerError(f"λ index {self.lmbda_idx} is not a finite non-negative number")
        for side, value in (("height", self.height), ("width", self.width)):
            if not 1 <= value <= MAX_SIDE:
                raise ContainerError(f"image {side} {value} is outside [1, {MAX_SIDE}]")
        if self.arithmetic not in ARITHMETIC_CODES:
            raise ContainerError(f"unknown arithmetic {self.arithmetic!r}")
        if (self.tables_crc is None) != (self.symbols_crc is None):
            raise ContainerError("the tables digest and the symbols CRC go together")
        for crc in (self.tables_crc, self.symbols_crc):
            if crc is not None and not 0 <= crc < 1 << 32:
                raise ContainerError("checksums are 32-bit")
        if self.rate_map is not None and self.lmbda_idx is None:
            raise ContainerError(
                "a quality map needs a variable-rate file (its λ index is the base)"
            )
        for label, data in (("z", self.z_string), ("y", self.y_string)):
            if len(data) < _MIN_STREAM or len(data) % 4:
                raise ContainerError(
                    f"{label} stream of {len(data)} bytes is not a rANS stream "
                    f"(whole 32-bit words, at least {_MIN_STREAM} bytes)"
                )

    # -- writing ----------------------------------------------------------------------------
    def header(self) -> bytes:
        """Everything before the quality map and the streams."""
        name = self.model.name.encode("utf-8")
        flags = (_VARIABLE_RATE if self.variable_rate else 0) | (_CHECKED if self.checked else 0)
        flags |= _RATE_MAP if self.rate_map is not None else 0
        checks = _CRC_PAIR.pack(self.tables_crc, self.symbols_crc) if self.checked else b""
        rate_map = self.rate_map
        map_sizes = (
            b""
            if rate_map is None
            else b"".join(map(encode_varint, (rate_map.rows, rate_map.cols, len(self.map_bytes))))
        )
        parts = [
            MAGIC,
            bytes([self.write_version, flags]),
            self.model.digest,
            _FLOAT.pack(self.lmbda_idx) if self.lmbda_idx is not None else b"",
            bytes([ARITHMETIC_CODES[self.arithmetic]]),
            checks,
            bytes([len(name)]),
            name,
            encode_varint(self.height),
            encode_varint(self.width),
            map_sizes,
            encode_varint(len(self.z_string)),
            encode_varint(len(self.y_string)),
        ]
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        body = self.header() + self.map_bytes + self.z_string + self.y_string
        return body + _CRC.pack(zlib.crc32(body))

    @property
    def overhead(self) -> int:
        """Bytes of the file that are not coded data (header and CRC; not the quality map)."""
        return len(self.header()) + _CRC.size

    @property
    def num_bytes(self) -> int:
        return self.overhead + len(self.map_bytes) + len(self.z_string) + len(self.y_string)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, header included."""
        return 8 * self.num_bytes / (self.height * self.width)

    def describe(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values (``lae-vbr info --json``)."""
        return {
            "format_version": self.version,
            "arithmetic": self.arithmetic,
            "checked": self.checked,
            "model_name": self.model.name,
            "model_digest": self.model.digest.hex(),
            "variable_rate": self.variable_rate,
            "lmbda_idx": self.lmbda_idx,
            "height": self.height,
            "width": self.width,
            "z_bytes": len(self.z_string),
            "y_bytes": len(self.y_string),
            "header_bytes": self.overhead,
            "quality_map": None if self.rate_map is None else self._describe_map(),
            "file_bytes": self.num_bytes,
            "bpp": self.bpp,
        }

    def _describe_map(self) -> dict[str, Any]:
        rate_map = self.rate_map
        assert rate_map is not None
        return {
            "rows": rate_map.rows,
            "cols": rate_map.cols,
            "bytes": len(self.map_bytes),
            "lowest_idx": self.lmbda_idx,
            "highest_idx": to_float32(self.lmbda_idx + rate_map.highest_offset),  # type: ignore[operator]
            "roi_share": rate_map.roi_share,
        }

    def write(self, path: str | PathLike) -> Path:
        return write_atomic(path, self.to_bytes())

    # -- reading ----------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> Bitstream:
        """Parse and check a whole file; raises ContainerError on anything malformed."""
        data = bytes(data)
        if not data.startswith(MAGIC):
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                raise ContainerError(f"file too short to be an lae-vbr file ({len(data)} bytes)")
            raise ContainerError("not an lae-vbr file (wrong magic bytes)")
        reader = _Reader(data, len(MAGIC))
        version = reader.byte("format version")
        if version not in READABLE_VERSIONS:
            raise ContainerError(
                f"unsupported format version {version} (this lae-vbr reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}); it was written by a newer lae-vbr"
            )
        fields = _read_header(reader, version)
        z_len, y_len = fields.pop("z_len"), fields.pop("y_len")
        map_len = fields.pop("map_len", 0)
        expected = reader.pos + map_len + z_len + y_len + _CRC.size
        if expected > len(data):
            raise ContainerError(f"truncated file: {len(data)} bytes of the {expected} declared")
        if expected < len(data):
            raise ContainerError(f"{len(data) - expected} unexpected bytes after the end")
        (stored_crc,) = _CRC.unpack_from(data, expected - _CRC.size)
        if zlib.crc32(memoryview(data)[: expected - _CRC.size]) != stored_crc:
            raise ContainerError("corrupted file (CRC-32 mismatch)")
        # Only checksummed bytes get here: what follows guards against files written wrongly.
        z_start = reader.pos + map_len
        map_sizes = fields.pop("map_sizes", None)
        rate_map = None
        if map_sizes is not None:
            rate_map = RateMap.from_bytes(*map_sizes, data[reader.pos : z_start])
        return cls(
            **_checked_fields(fields, version),
            rate_map=rate_map,
            z_string=data[z_start : z_start + z_len],
            y_string=data[z_start + z_len : z_start + z_len + y_len],
            version=version,
        )


def _read_header(reader: _Reader, version: int) -> dict[str, Any]:
    """The raw header fields after the version byte (bounds-checked, not yet validated)."""
    fields: dict[str, Any] = {"flags": reader.byte("flags")}
    if fields["flags"] & ~_KNOWN_FLAGS[version]:  # they decide which fields follow
        raise ContainerError(f"unknown flags 0x{fields['flags']:02x} for format version {version}")
    fields["digest"] = reader.take(DIGEST_SIZE, "model digest")
    variable = fields["flags"] & _VARIABLE_RATE
    fields["raw_lmbda"] = reader.take(_FLOAT.size, "λ index") if variable else None
    fields["arithmetic"] = reader.byte("arithmetic") if version >= 2 else 0
    checked = version >= 2 and fields["flags"] & _CHECKED
    fields["crcs"] = reader.take(2 * _CRC.size, "checksums") if checked else None
    fields["raw_name"] = reader.take(reader.byte("name length"), "model name")
    for key in ("height", "width"):
        fields[key] = reader.varint(key)
    if version >= 3 and fields["flags"] & _RATE_MAP:
        fields["map_sizes"] = (reader.varint("map rows"), reader.varint("map columns"))
        fields["map_len"] = reader.varint("map length")
    for key in ("z_len", "y_len"):
        fields[key] = reader.varint(key.replace("_len", " length"))
    return fields


def _checked_fields(fields: dict[str, Any], version: int) -> dict[str, Any]:
    """The header's values, validated, as :class:`Bitstream` arguments."""
    arithmetic = {code: name for name, code in ARITHMETIC_CODES.items()}.get(fields["arithmetic"])
    if arithmetic is None:
        raise ContainerError(f"unknown arithmetic code {fields['arithmetic']}")
    try:
        name = fields["raw_name"].decode("utf-8")
    except UnicodeDecodeError as err:
        raise ContainerError("model name is not valid UTF-8") from err
    if not name.isprintable() or len(fields["raw_name"]) > MAX_NAME_BYTES:
        raise ContainerError("model name is not a short printable string")
    raw_lmbda, crcs = fields["raw_lmbda"], fields["crcs"]
    tables_crc, symbols_crc = (None, None) if crcs is None else _CRC_PAIR.unpack(crcs)
    return {
        "model": ModelId(name, fields["digest"]),
        "lmbda_idx": None if raw_lmbda is None else _FLOAT.unpack(raw_lmbda)[0],
        "height": fields["height"],
        "width": fields["width"],
        "arithmetic": arithmetic,
        "tables_crc": tables_crc,
        "symbols_crc": symbols_crc,
    }


class _Reader:
    """Bounds-checked reads from the front of a byte string."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ContainerError(f"truncated file (ends inside the {what})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        """Unsigned LEB128, minimal encoding only, at most 5 bytes."""
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.byte(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i:
                    raise ContainerError(f"malformed header ({what} is not minimally encoded)")
                return value
        raise ContainerError(f"malformed header ({what} is too long)")


def read_bitstream(path: str | PathLike) -> Bitstream:
    """Read and parse a file. A missing file raises FileNotFoundError; anything that is not a
    regular file of at most MAX_FILE_BYTES raises ContainerError before it is read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"compressed file not found: {path}")
    if not path.is_file():
        raise ContainerError(f"{path} is not a regular file")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ContainerError(f"{path} is larger than {MAX_FILE_BYTES} bytes; not an lae-vbr file")
    return Bitstream.from_bytes(data)
