"""How much of its range the encoder-side LAE uses at each λ index: the mask is
``exp(softsign(·))`` in (1/e, e), so log m lies in (−1, 1), and a latent cannot be scaled down
(or up) further than that, whatever training does.

    python experiments/demo_model/mask_range.py [--checkpoint PATH] [--images N]

Prints, per λ index, the mean natural log of the mask over the first N Kodak images and the
share of its values below −0.9 and above 0.9 (near the ends of the range).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.rate_model import RateModel
from lae_vbr.paths import shared_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--indices", type=float, nargs="+", default=[0, 1, 2.5, 4, 5])
    args = parser.parse_args()
    codec = ImageCodec.load(args.checkpoint)
    model = codec.model
    paths = sorted((shared_dir() / "data" / "kodak").glob("*.png"))[: args.images]
    rates = [RateModel(model, read_image(p)) for p in paths]
    print(f"{codec.id}, {len(paths)} Kodak images; encoder-side LAE, log m ∈ (−1, 1)")
    print("| λ index | mean log m | share < −0.9 | share > 0.9 |\n|---|---|---|---|")
    for idx in args.indices:
        with torch.inference_mode():
            logs = torch.cat([
                model.modnet_ga.log_mask(
                    r.y, model.lmbda_input(idx, 1), r.context
                ).flatten()
                for r in rates
            ])  # fmt: skip
        low, high = (logs < -0.9).double().mean(), (logs > 0.9).double().mean()
        print(f"| {idx:g} | {float(logs.mean()):+.3f} | {float(low):.1%} | {float(high):.1%} |")


if __name__ == "__main__":
    main()
