"""Write the bundled model's CDF tables (every entropy model's, one after another) as the
libFuzzer harness reads them, and a seed corpus of real streams for it.

    python tests/fuzz/rans_tables.py TABLES_FILE SEED_DIR
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import torch
from compressai.entropy_models import EntropyModel

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.models.rans import CdfTables


def table_arrays(codec: ImageCodec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cdfs rows × width, sizes, offsets) of every entropy model of the codec, in order."""
    parts = [CdfTables.of(m) for m in codec.model.modules() if isinstance(m, EntropyModel)]
    width = max(p.cdfs.shape[1] for p in parts)
    cdfs = np.concatenate([np.pad(p.cdfs, ((0, 0), (0, width - p.cdfs.shape[1]))) for p in parts])
    sizes = np.concatenate([p.sizes for p in parts])
    offsets = np.concatenate([p.offsets for p in parts])
    return np.ascontiguousarray(cdfs, np.int32), sizes.astype(np.int32), offsets.astype(np.int32)


def harness_input(data: bytes, n_tables: int) -> tuple[np.ndarray, bytes]:
    """(table indexes, stream) of one input of rans_fuzzer.c, read as the harness reads it."""
    n = (data[0] | (data[1] << 8)) % 4097 if len(data) >= 2 else 0
    signed = np.frombuffer(data[2 : 2 + n], dtype=np.int8).astype(np.int32)
    indexes = np.fmod(signed, n_tables + 2).astype(np.int32)  # C's % keeps the sign
    return indexes, data[2 + n :]


def write_tables(codec: ImageCodec, path: Path) -> None:
    cdfs, sizes, offsets = table_arrays(codec)
    width = cdfs.shape[1]
    data = struct.pack("<ii", len(sizes), width)
    data += b"".join(a.astype("<i4").tobytes() for a in (sizes, offsets, cdfs))
    path.write_bytes(data)


def write_seeds(codec: ImageCodec, folder: Path) -> None:
    """Real y and z streams of the bundled model, each with the table indexes it was coded
    with (the first table of each model: the indexes are not needed to be right for a seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for i, idx in enumerate((0.0, 2.5, 5.0)):
        x = torch.rand(1, 3, 32 + 16 * i, 48)
        stream = codec.encode(x, idx)
        for name, string in (("y", stream.y_string), ("z", stream.z_string)):
            n = min(4096, 4 * len(string))
            seed = struct.pack("<H", n) + bytes(n) + string
            (folder / f"seed_{i}_{name}").write_bytes(seed)


if __name__ == "__main__":
    codec = ImageCodec.load(None)
    write_tables(codec, Path(sys.argv[1]))
    write_seeds(codec, Path(sys.argv[2]))
