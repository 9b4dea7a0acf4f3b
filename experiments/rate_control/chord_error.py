"""How far `--psnr`'s two-round line misses, by axis, on the D-λ study's points.

    python experiments/rate_control/chord_error.py [experiments/dlambda/dlambda.json]

For each image of a D-λ study (PSNR of the decoded image on a grid of λ indices), and each
target at 25 % and 75 % of its PSNR range: the line through the rounds `encode_to_psnr` makes
(the middle index 2.5 and the end on the target's side) on an axis, solved for the target; the
PSNR there is read off the grid (linear between grid points on that axis). Printed: the mean
and max |PSNR − target| per axis. The axes: Σ log₂ m (mean log₂ m, the one in use), the log of
the estimated rate, and the λ index.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

AXES = {"mask": "mean_log2_mask", "log_rate": "log_bits_estimate", "index": "lmbda_idx"}


def chord_errors(rows: list[dict], key: str, fractions=(0.25, 0.75)) -> list[float]:
    images = defaultdict(list)
    for row in rows:
        images[row["image"]].append(row)
    errors = []
    for points in images.values():
        points.sort(key=lambda r: r["lmbda_idx"])
        x = np.array([r[key] for r in points])
        y = np.array([r["psnr"] for r in points])
        mid = [r["lmbda_idx"] for r in points].index(2.5)
        for fraction in fractions:
            target = y[0] + fraction * (y[-1] - y[0])
            end = 0 if target < y[mid] else len(points) - 1
            at = x[mid] + (target - y[mid]) * (x[end] - x[mid]) / (y[end] - y[mid])
            order = np.argsort(x)
            errors.append(abs(float(np.interp(at, x[order], y[order])) - target))
    return errors


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/dlambda/dlambda.json")
    rows = json.loads(path.read_text())["rows"]
    for name, key in AXES.items():
        errors = chord_errors(rows, key)
        print(f"{name}: mean {np.mean(errors):.3f} dB, max {np.max(errors):.3f} dB")


if __name__ == "__main__":
    main()
