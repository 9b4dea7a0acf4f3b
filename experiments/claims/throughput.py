"""Training speed and size of the claims study's arms, side by side in one run.

    OMP_NUM_THREADS=1 python experiments/claims/throughput.py [--rounds 5] [--steps 4]
        [--out experiments/claims/throughput.json]

The runs' own ``training throughput`` lines cannot rank the arms: they ran two or three at a
time on two cores, so the rate of one architecture moved with what ran beside it (the six
fixed-rate models, all alike, logged 9.9 to 19.0 images/s). Here every arm is built from its
own experiment config (``experiment=claims/fixed`` or ``claims/vbr model/rate=<arm>``), and
the arms take turns: ``--rounds`` rounds of ``--steps`` training steps each (batch 8, 128²
crops of ``photos/train``, the λ-sampled RD loss plus the auxiliary loss, backward, Adam), one
thread. Reported per arm: parameters, the median images/s over the rounds and its ratio to the
fixed-rate model's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lae_vbr.config import register_resolvers
from lae_vbr.data.tensors import read_image_tensor
from lae_vbr.module import CompressionModule
from lae_vbr.paths import shared_dir

ROOT = Path(__file__).resolve().parents[2]
#: arm → the overrides of its training run (the fixed-rate family's middle λ stands for it).
ARMS = {
    "fixed": ["experiment=claims/fixed", "lmbda.value=0.013"],
    "lae": ["experiment=claims/vbr", "model/rate=lae"],
    "lae_no_context": ["experiment=claims/vbr", "model/rate=lae_no_context"],
    "lae_encoder_only": ["experiment=claims/vbr", "model/rate=lae_encoder_only"],
    "gain": ["experiment=claims/vbr", "model/rate=gain"],
}


def build(overrides: list[str]) -> CompressionModule:
    """The arm's model and loss, as its training run builds them."""
    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    parts = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "loss")}
    return CompressionModule(**CompressionModule.arguments(parts), cfg={})


def crops(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` random ``size``² crops of the training photos, (count, 3, size, size)."""
    photos = sorted((shared_dir() / "data" / "photos" / "train").glob("*.png"))
    if not photos:
        raise SystemExit(f"throughput: no photos under {shared_dir()}/data/photos/train")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        x = read_image_tensor(photos[i % len(photos)])[0]
        top = int(torch.randint(0, x.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, x.shape[2] - size + 1, (1,), generator=generator))
        out.append(x[:, top : top + size, left : left + size])
    return torch.stack(out)


class Trainer:
    """One arm's training steps: as ``CompressionModule.training_step`` computes them, with
    one Adam over every parameter (the auxiliary quantiles included)."""

    def __init__(self, module: CompressionModule) -> None:
        self.model, self.loss = module.model.train(), module.loss
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=5e-4)

    def step(self, x: torch.Tensor) -> None:
        lmbda_idx = self.loss.sample_rate(x.shape[0], self.model.latent_shape(*x.shape[-2:]))
        out = self.model(x, lmbda_idx)
        loss = self.loss(out, x, lmbda_idx)["loss"] + self.model.aux_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def measure(rounds: int, steps: int, batch: int, crop: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    modules = {name: build(overrides) for name, overrides in ARMS.items()}
    trainers = {name: Trainer(module) for name, module in modules.items()}
    batches = [crops(batch, crop, seed) for seed in range(steps)]
    for trainer in trainers.values():  # warm-up
        trainer.step(batches[0])
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            began = time.perf_counter()
            for x in batches:
                trainer.step(x)
            rates[name].append(steps * batch / (time.perf_counter() - began))
    fixed = statistics.median(rates["fixed"])
    arms = {
        name: {
            "parameters": sum(p.numel() for p in modules[name].model.parameters()),
            "images_per_s_median": round(statistics.median(r), 2),
            "images_per_s_rounds": [round(v, 2) for v in r],
            "vs_fixed": round(statistics.median(r) / fixed, 3),
        }
        for name, r in rates.items()
    }
    return {
        "batch": batch,
        "crop": crop,
        "rounds": rounds,
        "steps_per_round": steps,
        "threads": 1,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "arms": arms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    record = measure(args.rounds, args.steps, args.batch, args.crop)
    for name, arm in record["arms"].items():
        rate = arm["images_per_s_median"]
        print(f"{name:18} {arm['parameters']:>9,} parameters  {rate:6.2f} images/s  "
              f"{arm['vs_fixed']:.3f}× fixed")  # fmt: skip
    if args.out:
        record["command"] = "OMP_NUM_THREADS=1 python experiments/claims/throughput.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "out"
        )
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
