"""A long folder run: resident memory and time per image over hundreds of images.

    python experiments/bench/bench_folder.py --images 500 --size 256 \
        --out experiments/bench/folder_cpu.json

Writes ``--images`` crops of the Kodak images (each Kodak image cut into tiles of ``--size``,
repeated as needed, so consecutive files differ) to a temporary folder and runs ``lae-vbr
compress FOLDER OUT --quality 2.5`` on it, as a user would, with the bundled model and one
thread. The command prints one line per file written; at each line the process's resident
memory (``VmRSS``) and the time are read. Recorded: resident memory at the 50th image and at
the last, their growth, and the time per image (median, 90th percentile, and the medians of
the first and last hundred).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def write_images(folder: Path, count: int, size: int) -> None:
    tiles = []
    for path in sorted(KODAK.glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for top in range(0, rgb.shape[0] - size + 1, size):
            for left in range(0, rgb.shape[1] - size + 1, size):
                tiles.append(rgb[top : top + size, left : left + size])
    for i in range(count):
        Image.fromarray(tiles[i % len(tiles)]).save(folder / f"{i:04d}.png")


def rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run(folder: Path, out: Path) -> list[tuple[float, float]]:
    """(seconds since start, resident GB) at each file written."""
    command = [sys.executable, "-m", "lae_vbr", "compress", str(folder), str(out),
               "--quality", "2.5", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    began, marks = time.perf_counter(), []
    assert process.stdout is not None
    for line in process.stdout:
        if " -> " in line:
            marks.append((time.perf_counter() - began, rss_gb(process.pid)))
    if process.wait():
        raise SystemExit(f"the folder run failed (exit {process.returncode})")
    return marks


def summarise(marks: list[tuple[float, float]]) -> dict[str, float]:
    times = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    at50, last = marks[49][1], marks[-1][1]
    return {
        "images": len(marks),
        "rss_gb_at_50th": round(at50, 3),
        "rss_gb_at_last": round(last, 3),
        "rss_growth_50th_to_last": round(last / at50 - 1, 4),
        "rss_gb_max": round(max(m[1] for m in marks), 3),
        "seconds_per_image_median": round(statistics.median(times), 4),
        "seconds_per_image_p90": round(float(np.quantile(times, 0.9)), 4),
        "seconds_per_image_median_first_100": round(statistics.median(times[:100]), 4),
        "seconds_per_image_median_last_100": round(statistics.median(times[-100:]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.images < 51:
        raise SystemExit("give at least 51 images (memory is compared from the 50th on)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_images(folder, args.images, args.size)
        marks = run(folder, Path(tmp) / "out")
    record = {
        "command": " ".join(["python", *sys.argv]),
        "cli": "lae-vbr compress FOLDER OUT --quality 2.5 --threads 1 (the bundled model)",
        "image_size": f"{args.size}x{args.size}",
        "cpu": platform.processor() or platform.machine(),
        **summarise(marks),
        "marks": [[round(t, 3), round(r, 4)] for t, r in marks],
    }
    print(json.dumps({k: v for k, v in record.items() if k != "marks"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
