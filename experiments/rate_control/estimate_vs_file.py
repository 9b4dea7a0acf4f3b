"""The rate estimate against the real streams: bytes predicted by pricing each symbol with
the coder's tables (``latent_codec.coded_bits`` and ``stream_bytes``) against the bytes the
coder writes, and how far Σ −log₂ p of the continuous likelihoods falls short of them.

    OMP_NUM_THREADS=1 python experiments/rate_control/estimate_vs_file.py \
        [--checkpoint PATH] [--images kodim01 kodim07 kodim23] [--lmbda 0 2.5 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.models.padding import pad_image
from lae_vbr.models.rans import stream_bytes
from lae_vbr.paths import shared_dir


@torch.inference_mode()
def compare(codec: ImageCodec, x: torch.Tensor, idx: float) -> dict:
    model = codec.model
    y, _ = model.analysis(pad_image(x, model.pad_multiple), model.lmbda_input(idx, 1))
    coded = model.code_latent(y, arithmetic=codec.arithmetic)
    real = [len(strings[0]) for strings in coded["strings"]]
    bits = model.latent_codec.coded_bits(y)
    predicted = [stream_bytes(float(bits[k][0])) for k in ("y", "z")]
    likelihoods = model.latent_codec(y)["likelihoods"]
    ideal = sum(float(-torch.log2(likelihoods[k]).sum()) for k in ("y", "z")) / 8
    return {"real": real, "predicted": predicted, "short": 1 - ideal / sum(real)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--images", nargs="+", default=["kodim01", "kodim07", "kodim23"])
    parser.add_argument("--lmbda", type=float, nargs="+", default=[0.0, 2.5, 5.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = ImageCodec.load(args.checkpoint)
    print(f"{codec.id}\n")
    print("| image | λ index | y bytes (real / predicted) | z bytes (real / predicted) | "
          "Σ −log₂ p short of the streams |\n|---|---|---|---|---|")  # fmt: skip
    for name in args.images:
        x = read_image(shared_dir() / "data" / "kodak" / f"{name}.png")
        for idx in args.lmbda:
            r = compare(codec, x, idx)
            (ry, rz), (py, pz) = r["real"], r["predicted"]
            print(f"| {name} | {idx:g} | {ry} / {py} | {rz} / {pz} | {r['short']:.2%} |")


if __name__ == "__main__":
    main()
