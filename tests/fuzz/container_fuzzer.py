"""Atheris harness of the container parser and the whole decode path: bytes → ``Bitstream``
(the container's checks) → the model's checks → the checked rANS decoder → the symbols check.

Every input must either decode or raise a ``LaeVbrError`` (a clear error); anything else (another
exception, a crash, a hang) is a finding. Each input is tried as it is and with its last four
bytes replaced by the CRC-32 of the rest, so that mutations reach past the checksum into the
header's fields, the model's checks and the entropy decoder. Decoding uses the bundled model;
inputs naming an image larger than 64×64 stop at the container (the decode path's cost grows
with the size, not its checks).

    python tests/fuzz/container_fuzzer.py CORPUS_DIR -max_total_time=60
"""

from __future__ import annotations

import sys
import zlib

import atheris

with atheris.instrument_imports(include=["lae_vbr"]):
    from lae_vbr.codec.container import Bitstream
    from lae_vbr.codec.image_codec import ImageCodec
    from lae_vbr.errors import LaeVbrError

CODEC = ImageCodec.load(None)
MAX_DECODED_PIXELS = 64 * 64


def test_one_input(data: bytes) -> None:
    decode(data)
    if len(data) > 4:
        decode(data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little"))


def decode(data: bytes) -> None:
    try:
        stream = Bitstream.from_bytes(data)
    except LaeVbrError:
        return
    if stream.width * stream.height > MAX_DECODED_PIXELS:
        return
    try:
        CODEC.decode(stream)
    except LaeVbrError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
