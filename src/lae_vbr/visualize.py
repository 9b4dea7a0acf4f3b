"""Validation figures: the R-D curve over the λ set and a few reconstructions.

Figures are written under the run directory and, when a W&B logger is attached, logged to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lightning import LightningModule
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lae_vbr.atomic import atomic_path

__all__ = ["log_images", "rd_figure"]


def _wandb_loggers(module: LightningModule) -> list[WandbLogger]:
    return [lg for lg in module.loggers if isinstance(lg, WandbLogger)]


def _output_dir(module: LightningModule, name: str) -> Path:
    path = Path(module.trainer.default_root_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def rd_figure(
    module: LightningModule, points: Sequence[tuple[int, float, float, float | None]]
) -> Path:
    """Plot (bpp, PSNR) per λ index for this epoch; returns the PNG path."""
    from matplotlib.figure import Figure  # no pyplot: no backend chosen for the process

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.subplots()
    bpps = [p[1] for p in points]
    psnrs = [p[2] for p in points]
    ax.plot(bpps, psnrs, "o-", label=f"epoch {module.current_epoch}")
    for idx, bpp, psnr, _ in points:
        ax.annotate(str(idx), (bpp, psnr), textcoords="offset points", xytext=(4, -10))
    ax.set_xlabel("bpp (estimated)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Validation R-D, one point per λ index")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = _output_dir(module, "rd_curves") / f"epoch={module.current_epoch:04d}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    for logger in _wandb_loggers(module):
        logger.log_image(key="val/rd_curve", images=[str(path)], step=module.global_step)
    return path


def _to_uint8(img: Tensor) -> np.ndarray:
    return (img.squeeze(0).clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def log_images(module: LightningModule, original: Tensor, recons: dict[int, Tensor]) -> None:
    """Original next to its reconstructions at the lowest and highest λ index (W&B only)."""
    loggers = _wandb_loggers(module)
    if not loggers:
        return
    chosen = sorted({min(recons), max(recons)})
    images = [_to_uint8(original)] + [_to_uint8(recons[i]) for i in chosen]
    captions = ["original"] + [f"λ index {i}" for i in chosen]
    for logger in loggers:
        logger.log_image(
            key="val/reconstructions", images=images, caption=captions, step=module.global_step
        )
