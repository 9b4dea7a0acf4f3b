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
from os import PathLike
from pathlib import Path
from typing import Any

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
    "read_bitstream",
    "to_float32",
]

MAGIC = b"LAE"
FORMAT_VERSION = 1
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
_KNOWN_FLAGS = _VARIABLE_RATE
_MAX_VARINT_BYTES = 5  # enough for any length below MAX_FILE_BYTES
_CRC = struct.Struct("<I")
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


def _varint(value: int) -> bytes:
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
    float32 on construction; encoders must code with ``stream.lmbda_idx`` (``api`` does).
    """

    model: ModelId
    lmbda_idx: float | None
    height: int
    width: int
    z_string: bytes
    y_string: bytes

    def __post_init__(self) -> None:
        if self.lmbda_idx is not None:
            object.__setattr__(self, "lmbda_idx", to_float32(self.lmbda_idx))
        self.validate()

    @property
    def variable_rate(self) -> bool:
        return self.lmbda_idx is not None

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
        for label, data in (("z", self.z_string), ("y", self.y_string)):
            if len(data) < _MIN_STREAM or len(data) % 4:
                raise ContainerError(
                    f"{label} stream of {len(data)} bytes is not a rANS stream "
                    f"(whole 32-bit words, at least {_MIN_STREAM} bytes)"
                )

    # -- writing ----------------------------------------------------------------------------
    def header(self) -> bytes:
        """Everything before the streams."""
        name = self.model.name.encode("utf-8")
        parts = [
            MAGIC,
            bytes([FORMAT_VERSION, _VARIABLE_RATE if self.variable_rate else 0]),
            self.model.digest,
            _FLOAT.pack(self.lmbda_idx) if self.lmbda_idx is not None else b"",
            bytes([len(name)]),
            name,
            _varint(self.height),
            _varint(self.width),
            _varint(len(self.z_string)),
            _varint(len(self.y_string)),
        ]
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        body = self.header() + self.z_string + self.y_string
        return body + _CRC.pack(zlib.crc32(body))

    @property
    def overhead(self) -> int:
        """Bytes of the file that are not entropy-coded data (header and CRC)."""
        return len(self.header()) + _CRC.size

    @property
    def num_bytes(self) -> int:
        return self.overhead + len(self.z_string) + len(self.y_string)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, header included."""
        return 8 * self.num_bytes / (self.height * self.width)

    def describe(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values (``lae-vbr info --json``)."""
        return {
            "format_version": FORMAT_VERSION,
            "model_name": self.model.name,
            "model_digest": self.model.digest.hex(),
            "variable_rate": self.variable_rate,
            "lmbda_idx": self.lmbda_idx,
            "height": self.height,
            "width": self.width,
            "z_bytes": len(self.z_string),
            "y_bytes": len(self.y_string),
            "header_bytes": self.overhead,
            "file_bytes": self.num_bytes,
            "bpp": self.bpp,
        }

    def write(self, path: str | PathLike) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

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
        if version != FORMAT_VERSION:
            raise ContainerError(
                f"unsupported format version {version} (this lae-vbr reads version "
                f"{FORMAT_VERSION})"
            )
        flags = reader.byte("flags")
        digest = reader.take(DIGEST_SIZE, "model digest")
        raw_lmbda = reader.take(_FLOAT.size, "λ index") if flags & _VARIABLE_RATE else None
        raw_name = reader.take(reader.byte("name length"), "model name")
        height = reader.varint("height")
        width = reader.varint("width")
        z_len = reader.varint("z length")
        y_len = reader.varint("y length")
        expected = reader.pos + z_len + y_len + _CRC.size
        if expected > len(data):
            raise ContainerError(f"truncated file: {len(data)} bytes of the {expected} declared")
        if expected < len(data):
            raise ContainerError(f"{len(data) - expected} unexpected bytes after the end")
        (stored_crc,) = _CRC.unpack_from(data, expected - _CRC.size)
        if zlib.crc32(memoryview(data)[: expected - _CRC.size]) != stored_crc:
            raise ContainerError("corrupted file (CRC-32 mismatch)")
        # Only checksummed bytes get here: what follows guards against files written wrongly.
        if flags & ~_KNOWN_FLAGS:
            raise ContainerError(f"unknown flags 0x{flags:02x} for format version {version}")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ContainerError("model name is not valid UTF-8") from err
        if not name.isprintable() or len(raw_name) > MAX_NAME_BYTES:
            raise ContainerError("model name is not a short printable string")
        z_start = expected - _CRC.size - z_len - y_len
        return cls(
            model=ModelId(name, digest),
            lmbda_idx=None if raw_lmbda is None else _FLOAT.unpack(raw_lmbda)[0],
            height=height,
            width=width,
            z_string=data[z_start : z_start + z_len],
            y_string=data[z_start + z_len : z_start + z_len + y_len],
        )


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
