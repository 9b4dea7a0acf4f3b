"""Damaged ``.lae`` files, for testing that no file can break the decoder.

Used by the CI fuzz test (a few hundred seeded cases) and by
``experiments/robustness/fuzz_decoder.py`` (the long run). Every kind of damage the format can
meet: truncation at every header field, bit flips, rewritten length and size fields, random
bytes, files spliced from two others, and payload damage behind a recomputed (valid) CRC, which
only the decoder itself can catch.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator

from lae_vbr.codec.container import Bitstream, encode_varint

__all__ = ["KINDS", "damaged_files"]

_CRC = struct.Struct("<I")


def _with_crc(body: bytes) -> bytes:
    return body + _CRC.pack(zlib.crc32(body))


def _header_without_sizes(stream: Bitstream) -> bytes:
    """Everything before the four varints (height, width, z length, y length)."""
    header = stream.header()
    sizes = b"".join(
        encode_varint(v) for v in (stream.height, stream.width, len(stream.z_string),
                             len(stream.y_string))
    )  # fmt: skip
    return header[: len(header) - len(sizes)]


def _truncate(data: bytes, stream: Bitstream, rng: random.Random) -> bytes:
    cuts = [*range(len(stream.header()) + 1), rng.randrange(len(data))]
    return data[: rng.choice(cuts)]


def _bit_flips(data: bytes, stream: Bitstream, rng: random.Random) -> bytes:
    bad = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
    return bytes(bad)


def _payload(data: bytes, stream: Bitstream, rng: random.Random) -> bytes:
    """Streams damaged (bit flips, random runs, zeroed words), CRC recomputed."""
    start, end = len(stream.header()), len(data) - _CRC.size
    bad = bytearray(data[:end])
    mode = rng.randrange(3)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(start, end)
        if mode == 0:
            bad[pos] ^= 1 << rng.randrange(8)
        elif mode == 1:
            run = rng.randint(1, 16)
            bad[pos : pos + run] = rng.randbytes(len(bad[pos : pos + run]))
        else:
            word = pos - (pos - start) % 4
            bad[word : word + 4] = bytes(len(bad[word : word + 4]))
    return _with_crc(bytes(bad))


def _fields(data: bytes, stream: Bitstream, rng: random.Random) -> bytes:
    """Height, width or a stream length rewritten, the bytes kept, CRC recomputed."""
    h, w, z, y = stream.height, stream.width, len(stream.z_string), len(stream.y_string)
    which = rng.randrange(4)
    if which == 0:
        h = rng.choice([1, h + 1, max(1, h - 1), h * 2, rng.randint(1, 65535)])
    elif which == 1:
        w = rng.choice([1, w + 1, max(1, w - 1), w * 2, rng.randint(1, 65535)])
    else:
        shift = rng.choice([-8, -4, 4, 8])
        z, y = (z + shift, y - shift) if which == 2 else (z - shift, y + shift)
        z, y = max(z, 0), max(y, 0)
    sizes = b"".join(encode_varint(v) for v in (h, w, z, y))
    streams = stream.z_string + stream.y_string
    return _with_crc(_header_without_sizes(stream) + sizes + streams)


def _random(data: bytes, stream: Bitstream, rng: random.Random) -> bytes:
    """Random bytes; half of them behind a valid start of header and with a valid CRC."""
    body = rng.randbytes(rng.randint(0, 2 * len(data)))
    if rng.random() < 0.5:
        return body
    return _with_crc(stream.header()[:14] + body)


def _splice(data: bytes, stream: Bitstream, other: Bitstream, rng: random.Random) -> bytes:
    """This file's header with the other file's streams (lengths fixed up), CRC recomputed."""
    mixed = Bitstream(
        stream.model, stream.lmbda_idx, stream.height, stream.width,
        other.z_string if rng.random() < 0.5 else stream.z_string, other.y_string,
        stream.arithmetic, stream.tables_crc, stream.symbols_crc,
    )  # fmt: skip
    return mixed.to_bytes()


KINDS = ("truncate", "bit_flips", "payload_crc", "fields_crc", "random", "splice")


def damaged_files(data: bytes, other: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Endless (kind, damaged bytes) from a valid file ``data`` (and ``other``, a valid file of
    the same model, for splicing), cycling through :data:`KINDS`."""
    stream, second = Bitstream.from_bytes(data), Bitstream.from_bytes(other)
    makers = {
        "truncate": _truncate,
        "bit_flips": _bit_flips,
        "payload_crc": _payload,
        "fields_crc": _fields,
        "random": _random,
    }
    while True:
        for kind in KINDS:
            if kind == "splice":
                yield kind, _splice(data, stream, second, rng)
            else:
                yield kind, makers[kind](data, stream, rng)
