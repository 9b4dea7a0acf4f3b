"""Export a training checkpoint as the bundled demo model (fp16 weights, config included).

    python experiments/demo_model/export.py logs/demo/runs/<time>/checkpoints/last.ckpt \
        --out src/lae_vbr/assets/demo.pt --name lae-vbr-demo

The result is what ``lae-vbr`` uses when no ``--checkpoint`` is given. It keeps the model and λ
configuration of the training run, the up-to-date entropy-coder tables, and fp16 weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lae_vbr.models.registry import load_codec, save_codec_bundle

MAX_BYTES = 10 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="lae-vbr-demo", help="model name stored in files")
    args = parser.parse_args()

    codec = load_codec(args.checkpoint)
    codec.model.update(force=True)
    cfg = dict(codec.config)
    cfg["run_name"] = args.name
    keep = ("model", "lmbda", "run_name", "task_name", "data", "optim", "seed", "tags")
    cfg = {k: v for k, v in cfg.items() if k in keep}
    path = save_codec_bundle(args.out, codec.model, cfg, half=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size / 2**20:.1f} MiB, above the 10 MiB budget")

    # The fp16 copy must code exactly as it decodes: check one round trip.
    reloaded = load_codec(path).model
    reloaded.update(force=True)
    x = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        enc = reloaded.compress(x, 2.5)
        dec = reloaded.decompress(enc["strings"], enc["shape"], 2.5)
    assert dec["x_hat"].shape == x.shape
    print(f"wrote {path} ({size / 2**20:.2f} MiB, {len(codec.lmbdas)} λ, name {args.name})")


if __name__ == "__main__":
    main()
