"""The latent toy experiment: how far is one fixed-rate model's latent from another's by a gain?

Two frozen fixed-rate codecs, trained for a high and a low λ, map an image to ``y_high`` and
``y_low``. A small latent mapper learns ``down: y_high → y_low`` and ``up: y_low → y_high``; each
is an LAE with its λ input held constant, i.e. one learned gain exp(softsign(·)) ∈ (1/e, e) per
channel, optionally with the LAE's contextual block. Validation reports how well the latents
are matched (latent PSNRs) and what the chain x → g_a(high) → down → the low-rate model's
entropy model → up → g_s(high) gives (bpp estimated from likelihoods, PSNR), beside each frozen
model on its own. A gain can only align latents whose channels correspond, e.g. a low-rate model
fine-tuned from the high-rate one. (The reference's ``train_latent_e2e``; not in the paper.)

    python src/train.py experiment=latent_toy high_ckpt=PATH low_ckpt=PATH
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning import LightningModule
from torch import Tensor, nn

from lae_vbr.losses import bits_per_pixel, psnr_from_mse
from lae_vbr.models.composed import ComposedCodec
from lae_vbr.models.lae import LAE
from lae_vbr.models.padding import crop_image, pad_image
from lae_vbr.models.registry import load_codec
from lae_vbr.training import ConfigError

__all__ = ["LatentToyModule", "latent_psnr"]


def latent_psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR (dB) of a latent against its target, with the target's value range as the peak."""
    peak = target.max() - target.min()
    return 10 * torch.log10(peak**2 / F.mse_loss(pred, target).clamp_min(1e-12))


def _frozen_codec(path: Any, key: str) -> nn.Module:
    if not path:
        raise ConfigError(
            "the latent toy needs two fixed-rate checkpoints: high_ckpt=PATH low_ckpt=PATH "
            f"({key} is not set)"
        )
    loaded = load_codec(path)
    if loaded.rate_axis.variable or not isinstance(loaded.model, ComposedCodec):
        raise ConfigError(
            f"{key}={path} holds a {type(loaded.model).__name__}; the latent toy needs a "
            "fixed-rate TCM checkpoint"
        )
    return loaded.model.requires_grad_(False).eval()


class LatentToyModule(LightningModule):
    """Trains the latent mapper between two frozen fixed-rate codecs (``module._target_``)."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LatentToyModule:
        """The module of a composed config (the training task builds every module so)."""
        return cls(cfg)

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": dict(cfg)})
        self.high = _frozen_codec(cfg.get("high_ckpt"), "high_ckpt")
        self.low = _frozen_codec(cfg.get("low_ckpt"), "low_ckpt")
        channels, low = self.high.latent_channels, self.low.latent_channels
        if channels != low:
            raise ConfigError(
                f"the two models' latents differ in width ({channels} and {low} channels)"
            )
        contextual = bool((cfg.get("latent_toy") or {}).get("contextual", False))
        self.down = LAE(channels, num_layers=1, contextual=contextual)
        self.up = LAE(channels, num_layers=1, contextual=contextual)
        self.optimizer_cfg = (cfg.get("optim") or {}).get("optimizer")

    def train(self, mode: bool = True) -> LatentToyModule:
        """The frozen codecs stay in eval mode (deterministic rounding in their entropy models)."""
        super().train(mode)
        self.high.eval()
        self.low.eval()
        return self

    def _latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            x = pad_image(x, self.high.pad_multiple)
            return self.high.g_a(x), self.low.g_a(x)

    def _map(self, mapper: LAE, y: Tensor) -> Tensor:
        return mapper(y, y.new_ones(y.shape[0], 1))[0]

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        y_high, y_low = self._latents(batch)
        mse_down = F.mse_loss(self._map(self.down, y_high), y_low)
        mse_up = F.mse_loss(self._map(self.up, y_low), y_high)
        loss = mse_down + mse_up
        log = {"train/loss": loss, "train/mse_down": mse_down, "train/mse_up": mse_up}
        self.log_dict(log, on_step=True, on_epoch=True, batch_size=batch.shape[0])
        return loss

    @torch.no_grad()
    def measure(self, x: Tensor) -> dict[str, Tensor]:
        """Latent PSNRs, the mapped chain's bpp/PSNR, and each frozen model's own bpp/PSNR."""
        height, width = x.shape[-2:]
        pixels = height * width
        y_high, y_low = self._latents(x)
        low_pred, high_pred = self._map(self.down, y_high), self._map(self.up, y_low)
        out = {
            "loss": F.mse_loss(low_pred, y_low) + F.mse_loss(high_pred, y_high),
            "latent_psnr_low": latent_psnr(low_pred, y_low),
            "latent_psnr_high": latent_psnr(high_pred, y_high),
        }
        # the low-rate model's latent codec quantises and codes the mapped latent
        coded = self.low.latent_codec(low_pred)
        x_hat = crop_image(self.high.g_s(self._map(self.up, coded["y_hat"])), height, width)
        out["chain_bpp"] = bits_per_pixel(coded["likelihoods"], pixels).mean()
        out["chain_psnr"] = psnr_from_mse(F.mse_loss(x_hat.clamp(0, 1), x))
        for name, model in (("high", self.high), ("low", self.low)):
            own = model(x)
            out[f"{name}_bpp"] = bits_per_pixel(own["likelihoods"], pixels).mean()
            out[f"{name}_psnr"] = psnr_from_mse(F.mse_loss(own["x_hat"].clamp(0, 1), x))
        return out

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        metrics = self.measure(batch)
        self.log("val/loss", metrics.pop("loss"), prog_bar=True, batch_size=batch.shape[0])
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=batch.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in (*self.down.parameters(), *self.up.parameters()) if p.requires_grad]
        return instantiate(self.optimizer_cfg)(params)
