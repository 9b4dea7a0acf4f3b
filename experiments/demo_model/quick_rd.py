"""A quick R-D check of training checkpoints: rate and PSNR at every trained λ index.

    python experiments/demo_model/quick_rd.py CHECKPOINT [CHECKPOINT ...] [--images 6]

For each checkpoint (a training run's ``last.ckpt``, a bundle), the mean over the first N Kodak
images of the likelihood rate (Σ −log₂ p of y and z per pixel, no entropy coding) and of the
PSNR of the clamped forward output, at λ indices 0…top, the rate range (rate at the top index
over that at index 0), and the BD-rate of each against the first checkpoint given
(:func:`lae_vbr.evaluation.bd_rate`: akima, over the PSNR range both cover). It takes seconds,
so a run can be followed while it trains; the figures that count are those of ``src/eval.py``
(real files, 8-bit output, all 24 images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lae_vbr.codec.images import read_image
from lae_vbr.evaluation import RDCurve, bd_rate, curve_from_points
from lae_vbr.losses import bits_per_pixel, psnr_from_mse
from lae_vbr.models.registry import load_codec
from lae_vbr.paths import shared_dir


def rd_points(model: torch.nn.Module, images: list[torch.Tensor]) -> list[tuple[float, float]]:
    """(mean bpp, mean PSNR) per integer λ index."""
    points = []
    with torch.inference_mode():
        for idx in range(model.num_lmbdas):
            bpp = psnr = 0.0
            for x in images:
                out = model(x, float(idx))
                bpp += float(bits_per_pixel(out["likelihoods"], x.shape[-2] * x.shape[-1]))
                psnr += float(psnr_from_mse((out["x_hat"].clamp(0, 1) - x).pow(2).mean()))
            points.append((bpp / len(images), psnr / len(images)))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted((shared_dir() / "data" / "kodak").glob("*.png"))[: args.images]
    images = [read_image(p) for p in paths]
    print(f"first {len(images)} Kodak images; bpp / PSNR (dB) per λ index; rate range")
    first = None
    for checkpoint in args.checkpoints:
        points = rd_points(load_codec(checkpoint).model.float().eval(), images)
        curve = as_curve(str(checkpoint), points)
        first = first or curve
        text = "  ".join(f"{b:.3f}/{p:.2f}" for b, p in points)
        print(
            f"{checkpoint}: {text}  range {points[-1][0] / points[0][0]:.2f}×  "
            f"BD-rate against the first {bd_rate(first, curve).bd_rate:+.1f} %"
        )


def as_curve(name: str, points: list[tuple[float, float]]) -> RDCurve:
    """(bpp, PSNR) points as an R-D curve."""
    return curve_from_points(name, "quick_rd", [{"bpp": b, "psnr-rgb": p} for b, p in points])


if __name__ == "__main__":
    main()
