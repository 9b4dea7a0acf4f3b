"""Every input the fuzzers of tests/fuzz found, replayed through the code they broke (the
inputs are in tests/fuzz/regressions; the seed corpus of real files of every format version in
tests/fuzz/corpus): each now ends in a clear error, and real files still decode."""

from __future__ import annotations

import dataclasses
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from lae_vbr.codec.container import Bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.errors import LaeVbrError
from lae_vbr.models import _rans

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))
from rans_tables import harness_input, table_arrays  # noqa: E402

#: What each regression must now end in (its message), by file name.
EXPECTED = {
    "rans-value-overflow": "decoded value out of range",
    # a version 3 file (quality map) with damaged streams behind a recomputed CRC; found as an
    # RSS-limit report of a 30-minute container run, whose memory crept up inside Atheris (this
    # input alone adds 3 MB)
    "container-rss-limit": "entropy-coded data is damaged",
}


@pytest.fixture(scope="module")
def codec() -> ImageCodec:
    return ImageCodec.load(None)


@pytest.mark.parametrize("path", sorted(FUZZ.glob("regressions/rans-*")), ids=lambda p: p.name)
def test_rans_regressions_end_in_their_error(codec, path: Path) -> None:
    cdfs, sizes, offsets = table_arrays(codec)
    indexes, stream = harness_input(path.read_bytes(), len(sizes))
    out = np.zeros(max(len(indexes), 1), np.int32)
    with pytest.raises(ValueError, match=EXPECTED[path.name]):
        pos, state = _rans.init(stream)
        _rans.decode(stream, pos, state, indexes, cdfs, cdfs.shape[1], sizes, offsets, out)


def test_every_regression_has_its_expected_error() -> None:
    assert sorted(p.name for p in FUZZ.glob("regressions/*")) == sorted(EXPECTED)


@pytest.mark.parametrize("path", sorted(FUZZ.glob("regressions/container-*")), ids=lambda p: p.name)
def test_container_regressions_end_in_their_error(codec, path: Path) -> None:
    data = path.read_bytes()
    data = data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")  # as the harness tries it
    with pytest.raises(LaeVbrError, match=EXPECTED[path.name]):
        codec.decode(on_this_model(Bitstream.from_bytes(data), codec))


def on_this_model(stream: Bitstream, codec: ImageCodec) -> Bitstream:
    """``stream`` as if the bundled model had written it (its model and tables CRC), so that an
    input found with an earlier bundle still reaches the entropy decoder instead of ending in
    the model check."""
    tables_crc = None if stream.tables_crc is None else codec.tables_crc
    rebased = dataclasses.replace(stream, model=codec.id, tables_crc=tables_crc)
    return Bitstream.from_bytes(rebased.to_bytes())


@pytest.mark.parametrize("path", sorted(FUZZ.glob("corpus/*.lae")), ids=lambda p: p.name)
def test_the_seed_corpus_is_real_files_of_every_version(codec, path: Path) -> None:
    stream = Bitstream.from_bytes(path.read_bytes())
    assert stream.version == int(path.name[1])  # v1_…, v2_… and v3_… (quality maps)
    assert (stream.rate_map is not None) == (stream.version == 3)
    if stream.version >= 2:  # the bundled model's own files decode
        assert codec.decode(stream).shape[-2:] == (stream.height, stream.width)
    else:  # an earlier bundle's: refused by name, before any decoding
        with pytest.raises(LaeVbrError, match="written by model"):
            codec.decode(stream)
