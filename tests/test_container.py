"""The .lae container: exact layout, limits, and rejection of corrupt or hostile bytes."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import time
import zlib

import pytest

from lae_vbr.codec.container import (
    MAX_NAME_BYTES,
    MAX_SIDE,
    Bitstream,
    ContainerError,
    ModelId,
    read_bitstream,
)

DIGEST = bytes(range(1, 9))
Z = bytes(range(16))  # streams are whole 32-bit words, at least 8 bytes
Y = bytes(range(100, 140))


def sample(lmbda_idx: float | None = 2.5, name: str = "tiny", **kw: object) -> Bitstream:
    fields = {"height": 48, "width": 70, "z_string": Z, "y_string": Y, **kw}
    return Bitstream(ModelId(name, DIGEST), lmbda_idx, **fields)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _documented_body(version_and_flags: bytes, version_fields: bytes) -> bytes:
    """The bytes of docs/bitstream.md's layout for a variable-rate 300×5 file named "ab"."""
    return (
        b"LAE"  # magic
        + version_and_flags
        + DIGEST
        + struct.pack("<f", 2.5)  # λ index
        + version_fields  # version 2: arithmetic, then the two CRCs when checksummed
        + b"\x02ab"  # name length, name
        + b"\xac\x02"  # height 300 as LEB128
        + b"\x05"  # width 5
        + b"\x08\x0c"  # z and y lengths
        + Z[:8]
        + Y[:12]
    )


def test_layout_matches_the_documented_bytes() -> None:
    stream = Bitstream(
        ModelId("ab", DIGEST), 2.5, 300, 5, Z[:8], Y[:12], "float64", 0x01020304, 0x0A0B0C0D
    )
    version_2 = (
        b"\x01"  # arithmetic: float64
        + struct.pack("<II", 0x01020304, 0x0A0B0C0D)  # tables CRC, symbols CRC
    )
    body = _documented_body(b"\x02\x03", version_2)  # version 2, variable rate, checksummed
    assert stream.to_bytes() == with_crc(body)
    fixed = Bitstream(ModelId("ab", DIGEST), None, 300, 5, Z[:8], Y[:12])
    assert fixed.to_bytes()[:5] == b"LAE\x02\x00"
    assert len(fixed.to_bytes()) == len(stream.to_bytes()) - 4 - 8  # no λ, no checksums


def test_version_1_files_are_still_read() -> None:
    body = _documented_body(b"\x01\x01", b"")  # version 1, flags: variable rate
    stream = Bitstream.from_bytes(with_crc(body))
    assert (stream.version, stream.arithmetic, stream.checked) == (1, "float32", False)
    assert (stream.lmbda_idx, stream.height, stream.width) == (2.5, 300, 5)
    assert stream.y_string == Y[:12] and stream.z_string == Z[:8]
    with pytest.raises(ContainerError, match="unknown flags"):  # bit 1 means nothing in v1
        Bitstream.from_bytes(with_crc(b"LAE\x01\x03" + body[5:]))


@pytest.mark.parametrize("lmbda_idx", [None, 0.0, 2.5, 5.0])
def test_round_trip_keeps_every_field(lmbda_idx: float | None) -> None:
    stream = sample(lmbda_idx)
    data = stream.to_bytes()
    assert Bitstream.from_bytes(data) == stream
    assert stream.num_bytes == len(data)
    assert stream.bpp == pytest.approx(8 * len(data) / (48 * 70))


def test_lambda_index_is_float32_as_stored() -> None:
    stream = sample(1 / 3)
    assert stream.lmbda_idx == struct.unpack("<f", struct.pack("<f", 1 / 3))[0]
    assert Bitstream.from_bytes(stream.to_bytes()).lmbda_idx == stream.lmbda_idx


def test_overhead_is_a_few_bytes() -> None:
    stream = sample()
    assert stream.num_bytes == len(Z) + len(Y) + stream.overhead
    assert stream.overhead <= 32
    big = sample(height=512, width=768, y_string=bytes(40000))  # Kodak size, ~0.8 bpp
    assert big.overhead <= 36


def test_long_or_unprintable_names_are_cleaned() -> None:
    stream = sample(name="é" * 40)  # 2 bytes per character: cut at a character boundary
    assert stream.model.name == "é" * (MAX_NAME_BYTES // 2)
    assert Bitstream.from_bytes(stream.to_bytes()).model.name == stream.model.name
    assert sample(name="a\nb\x00").model.name == "a?b?"


@pytest.mark.parametrize(
    "fields",
    [
        {"height": 0},
        {"width": MAX_SIDE + 1},
        {"z_string": b""},
        {"y_string": bytes(10)},  # not whole 32-bit words
        {"y_string": bytes(4)},  # shorter than a flushed rANS state
    ],
)
def test_invalid_fields_are_refused_when_writing(fields: dict) -> None:
    with pytest.raises(ContainerError):
        sample(**fields)


@pytest.mark.parametrize("lmbda_idx", [float("nan"), float("inf"), -0.5])
def test_invalid_lambda_index_is_refused(lmbda_idx: float) -> None:
    with pytest.raises(ContainerError, match="λ index"):
        sample(lmbda_idx)


def test_digest_must_have_eight_bytes() -> None:
    with pytest.raises(ContainerError, match="8 bytes"):
        ModelId("x", b"\x00" * 4)


# -- rejecting bad bytes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"LA", "too short"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "wrong magic"),
        (b"LAE\x04" + bytes(40), "unsupported format version 4"),
        (b"LAE\x01\x01" + DIGEST, "truncated"),
    ],
)
def test_wrong_magic_version_or_short_files(data: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        Bitstream.from_bytes(data)


def test_every_truncation_and_trailing_bytes_are_rejected() -> None:
    data = sample().to_bytes()
    for n in range(len(data)):
        with pytest.raises(ContainerError):
            Bitstream.from_bytes(data[:n])
    with pytest.raises(ContainerError, match="unexpected bytes after the end"):
        Bitstream.from_bytes(data + b"\x00")


def test_every_single_bit_flip_is_rejected() -> None:
    data = bytearray(sample().to_bytes())
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ContainerError):
            Bitstream.from_bytes(bytes(flipped))


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One random corruption that surely changes the bytes."""
    out = bytearray(data)
    kind = rng.choice(["overwrite", "insert", "delete", "truncate", "splice"])
    if kind == "overwrite":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    elif kind == "insert":
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == "delete":
        at = rng.randrange(len(out))
        del out[at : at + rng.randint(1, 16)]
    elif kind == "truncate":
        del out[rng.randrange(len(out)) :]
    else:  # a run of random bytes over the header / stream boundary
        at = rng.randrange(len(out))
        run = rng.randbytes(min(rng.randint(2, 24), len(out) - at))
        out[at : at + len(run)] = run
    return bytes(out)


def test_fuzzed_streams_raise_only_container_error_and_fast() -> None:
    rng = random.Random(1234)
    originals = [sample().to_bytes(), sample(None, name="fixed-rate-model").to_bytes()]
    cases = 0
    start = time.perf_counter()
    for _ in range(600):
        data = rng.choice(originals)
        bad = _mutate(data, rng)
        if bad == data:
            continue
        cases += 1
        with pytest.raises(ContainerError):
            Bitstream.from_bytes(bad)
    for _ in range(200):  # random bytes, half of them behind a valid magic and version
        junk = rng.randbytes(rng.randint(0, 300))
        if rng.random() < 0.5:
            junk = b"LAE\x01" + junk
        cases += 1
        with pytest.raises(ContainerError):
            Bitstream.from_bytes(junk)
    assert cases >= 700
    assert time.perf_counter() - start < 2.0  # no case may loop or allocate by a header


def _raw(
    flags: int = 1,
    name: bytes = b"tiny",
    sizes: bytes = b"\x30\x46",
    lengths: bytes = b"\x10\x28",
    streams: bytes = Z + Y,
) -> bytes:
    """A file with arbitrary header values and a valid CRC (as a buggy or hostile writer
    could make)."""
    lmbda = struct.pack("<f", 2.5) if flags & 1 else b""
    arithmetic = b"\x00"  # float32, no checksums (flags bit 1 clear)
    body = b"LAE\x02" + bytes([flags]) + DIGEST + lmbda + arithmetic + bytes([len(name)]) + name
    return with_crc(body + sizes + lengths + streams)


def test_raw_helper_builds_a_valid_file() -> None:
    assert Bitstream.from_bytes(_raw()) == sample()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_raw(flags=0x81), "unknown flags"),
        (_raw(name=b"\xff\xfe"), "UTF-8"),
        (_raw(name=b"a\x07b"), "printable"),
        (_raw(name=b"n" * 40), "short printable"),
        (_raw(sizes=b"\x00\x46"), "height 0"),
        (_raw(sizes=b"\x81\x80\x04\x46"), "height 65537"),  # 3-byte varint over MAX_SIDE
        (_raw(sizes=b"\xb0\x00\x46"), "minimally encoded"),
        (_raw(sizes=b"\xff\xff\xff\xff\xff\xff\x46"), "too long"),
        (_raw(lengths=b"\x00\x38", streams=Y + Z), "z stream of 0 bytes"),
        (_raw(lengths=b"\x0e\x2a"), "z stream of 14 bytes"),
        # declared lengths far beyond the file: refused without allocating them
        (_raw(lengths=b"\xff\xff\xff\xff\x0f\x28"), "truncated file"),
    ],
)
def test_checksummed_but_invalid_headers_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        Bitstream.from_bytes(data)


def test_read_bitstream_checks_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bitstream(tmp_path / "missing.lae")
    with pytest.raises(ContainerError, match="not a regular file"):
        read_bitstream(tmp_path)
    path = sample().write(tmp_path / "ok.lae")
    assert read_bitstream(path) == sample()


def test_container_and_cli_import_without_torch() -> None:
    code = (
        "import sys, lae_vbr.codec, lae_vbr.cli, lae_vbr.cli.commands, lae_vbr.cli.folder; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
