"""``lae-vbr compress`` then ``decompress`` of one image, with freed memory kept (what the
command does) and with glibc's default, interleaved, each command in a fresh process.

    OMP_NUM_THREADS=1 python experiments/bench/cli_heap.py ../shared/data/kodak/kodim01.png \
        --rounds 6 [--checkpoint PATH] [--out experiments/bench/cli_heap.json]

Prints the wall time of each round's pair of commands and the per-round ratios default / kept
(above 1: keeping freed memory is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The command's own main; with "system", lae_vbr.heap is told to keep nothing.
_COMMAND = """
import sys
import lae_vbr.heap
from lae_vbr import cli
if sys.argv[1] == "system":
    lae_vbr.heap.keep_freed_memory_for = lambda pixels: False
sys.exit(cli.main(sys.argv[2:]))
"""


def _pair(mode: str, image: Path, work: Path, model: list[str]) -> float:
    began = time.perf_counter()
    for args in (
        ["compress", str(image), str(work / "x.lae"), "--quality", "2.5"],
        ["decompress", str(work / "x.lae"), str(work / "x.png")],
    ):
        command = [sys.executable, "-c", _COMMAND, mode, *args, "--threads", "1", *model]
        subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--checkpoint", type=Path, help="default: the bundled model")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = ["--checkpoint", str(args.checkpoint)] if args.checkpoint else []
    times: dict[str, list[float]] = {"keep": [], "system": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for mode in ("keep", "system") if i % 2 == 0 else ("system", "keep"):
                times[mode].append(_pair(mode, args.image, Path(tmp), model))
    ratios = [s / k for k, s in zip(times["keep"], times["system"], strict=True)]
    record = {
        "command": " ".join(["python", *sys.argv]),
        "seconds": {m: [round(t, 3) for t in ts] for m, ts in times.items()},
        "default_over_kept": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
    }
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
