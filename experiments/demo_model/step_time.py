"""Seconds per training step of candidate demo backbones (with both LAEs), one process.

    OMP_NUM_THREADS=1 python experiments/demo_model/step_time.py

One step: forward, an RD-like loss, backward and an Adam step on a batch of 8 × 128² crops, the
demo recipe's shape; the mean of three steps after one warm-up step.
"""

from __future__ import annotations

import time

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lae_vbr.models.vbr import VariableRateCodec
from lae_vbr.paths import REPO_ROOT

BACKBONES = ["tcm_tiny", "mbt2018_mean_small"]


def step_time(model: torch.nn.Module, steps: int = 3) -> float:
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(8, 3, 128, 128)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        out = model(x, torch.randint(0, 6, (8,)).float())
        rate = -sum(lik.log2().sum() for lik in out["likelihoods"].values()) / x.numel()
        loss = rate + 0.05 * 255**2 * (out["x_hat"] - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    torch.set_num_threads(1)
    for name in BACKBONES:
        backbone = instantiate(OmegaConf.load(REPO_ROOT / "conf/model/backbone" / f"{name}.yaml"))
        model = VariableRateCodec(backbone, num_lmbdas=6)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name}: {params:.2f} M parameters, {step_time(model):.3f} s per step")


if __name__ == "__main__":
    main()
