"""What reproducible decoding costs: float64 against float32 entropy parameters, interleaved.

    python experiments/bench/bench_arithmetic.py --images ../shared/data/kodak \\
        --lmbda 0 1.7 3.3 5 --threads 2 --out experiments/bench/arithmetic_kodak.json

Every (image, λ index) is coded and decoded with both arithmetics, alternating which goes
first, in one process with the same model (default: the bundled demo model): file size, PSNR
of the 8-bit decode, encode and decode seconds. Reported: BD-rate of float64 against float32
(``bjontegaard``, Akima) and the median per-image time ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import bjontegaard
import numpy as np
import torch

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.data.tensors import tensor_to_uint8

ARITHMETICS = ("float32", "float64")


def _code(codec: ImageCodec, x: torch.Tensor, idx: float, arithmetic: str) -> dict:
    codec.arithmetic = arithmetic
    start = time.perf_counter()
    stream = codec.encode(x, idx)
    encoded = time.perf_counter()
    x_hat = codec.decode(stream)
    decoded = time.perf_counter()
    mse = np.mean((tensor_to_uint8(x).astype(float) - tensor_to_uint8(x_hat)) ** 2)
    return {
        "bpp": stream.bpp,
        "psnr": 10 * np.log10(255**2 / max(mse, 1e-12)),
        "encode_s": encoded - start,
        "decode_s": decoded - encoded,
    }


def measure(codec: ImageCodec, images: list[Path], grid: list[float]) -> list[dict]:
    rows = []
    for n, path in enumerate(images):
        x = read_image(path)
        for idx in grid:
            order = ARITHMETICS if n % 2 == 0 else ARITHMETICS[::-1]
            for arithmetic in order:
                rows.append({"image": path.name, "lmbda_idx": idx, "arithmetic": arithmetic,
                             **_code(codec, x, idx, arithmetic)})  # fmt: skip
        print(f"{path.name} done", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict], grid: list[float]) -> dict:
    curves = {
        a: [
            [np.mean([r[k] for r in rows if r["arithmetic"] == a and r["lmbda_idx"] == i])
             for i in grid]
            for k in ("bpp", "psnr")
        ]
        for a in ARITHMETICS
    }  # fmt: skip
    (r32, p32), (r64, p64) = curves["float32"], curves["float64"]
    bd = bjontegaard.bd_rate(r32, p32, r64, p64, method="akima")
    pairs = {}
    for r in rows:
        pairs.setdefault((r["image"], r["lmbda_idx"]), {})[r["arithmetic"]] = r

    def ratio(key: str) -> float:
        return statistics.median(p["float64"][key] / p["float32"][key] for p in pairs.values())

    return {
        "bd_rate_float64_vs_float32_percent": float(bd),
        "curves": {a: {"bpp": c[0], "psnr": c[1]} for a, c in curves.items()},
        "encode_time_ratio_median": ratio("encode_s"),
        "decode_time_ratio_median": ratio("decode_s"),
        "encode_s_mean": {a: np.mean([r["encode_s"] for r in rows if r["arithmetic"] == a])
                          for a in ARITHMETICS},
        "decode_s_mean": {a: np.mean([r["decode_s"] for r in rows if r["arithmetic"] == a])
                          for a in ARITHMETICS},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--lmbda", type=float, nargs="+", default=[0.0, 1.7, 3.3, 5.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = ImageCodec.load(args.checkpoint)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() == ".png")
    images = images[: args.max_images] if args.max_images else images
    codec.encode(read_image(images[0])[..., :64, :64], 0.0)  # warm-up
    rows = measure(codec, images, args.lmbda)
    summary = summarise(rows, args.lmbda)
    payload = {"command": " ".join(sys.argv), "model": str(codec.id), "threads": args.threads,
               "summary": summary, "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
