"""How far apart are the images decoded from one file with 1 and with 2 threads?

    python experiments/determinism/pixel_diff.py /tmp/det64mbt/e1_*.lae /tmp/det64mbt/e2_*.lae

Each file is decoded by two processes (1 and 2 torch threads, the bundled model or
``--checkpoint``); the decoded 8-bit images are compared value by value. ``measure.py`` only
keeps a hash of each decode (equal or not); this gives the size of the difference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKER = """
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.data.tensors import tensor_to_uint8
codec = ImageCodec.load(sys.argv[3] or None)
files = sys.argv[4:]
np.savez(sys.argv[2], *[tensor_to_uint8(codec.decode(read_bitstream(f))) for f in files])
"""


def decode_all(files: list[str], threads: int, checkpoint: str, out: Path) -> list[np.ndarray]:
    """The decoded images of ``files``, decoded in a fresh process with ``threads`` threads."""
    cmd = [sys.executable, "-c", WORKER, str(threads), str(out), checkpoint, *files]
    subprocess.run(cmd, check=True)
    with np.load(out) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(files))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--checkpoint", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = decode_all(args.files, 1, args.checkpoint, Path(tmp) / "one.npz")
        two = decode_all(args.files, 2, args.checkpoint, Path(tmp) / "two.npz")
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(one, two, strict=True)]
    values = sum(d.size for d in diffs)
    print(
        f"{len(diffs)} files: {sum(int(d.max() == 0) for d in diffs)} decode bit-identically; "
        f"largest difference {max(int(d.max()) for d in diffs)} level(s); "
        f"{100 * sum(int((d > 0).sum()) for d in diffs) / values:.4f} % of the values differ"
    )


if __name__ == "__main__":
    main()
