"""The training task behind ``src/train.py``: check the config, build everything, fit."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from .config import ConfigError, to_container
from .losses import MIN_MSSSIM_SIDE
from .models.state_dict import copy_matching_weights, load_state_dict_file
from .module import CompressionModule

__all__ = ["ConfigError", "train", "validate_config"]

log = logging.getLogger(__name__)


def _pad_multiple(cfg: DictConfig) -> int:
    backbone = cfg.model.get("backbone")
    if backbone is None or "_target_" not in backbone:
        return 1
    return int(getattr(get_class(backbone._target_), "pad_multiple", 1))


def validate_config(cfg: DictConfig) -> None:
    """Fail before training, with a message saying what to change."""
    crop = cfg.data.get("crop_size")
    multiple = _pad_multiple(cfg)
    if crop is not None and (int(crop) <= 0 or int(crop) % multiple):
        raise ConfigError(
            f"data.crop_size={crop} does not suit {cfg.model.backbone._target_}, which works on "
            f"multiples of {multiple} pixels; use e.g. data.crop_size={max(multiple, 256)}"
        )
    if cfg.lmbda.distortion == "ms-ssim" and crop is not None and int(crop) < MIN_MSSSIM_SIDE:
        raise ConfigError(
            f"MS-SSIM training needs crops of at least {MIN_MSSSIM_SIDE} pixels, "
            f"data.crop_size={crop}; use data.crop_size=256"
        )
    if str(cfg.trainer.get("precision", "32")).startswith("16"):
        raise ConfigError(
            "fp16 mixed precision is not supported (entropy models overflow in fp16); "
            "use trainer.precision=32-true or bf16-mixed"
        )


def _instantiate_dict(node: DictConfig | None, kind: type) -> list[Any]:
    objects = []
    for name, sub in (node or {}).items():
        if isinstance(sub, DictConfig) and "_target_" in sub:
            obj = instantiate(sub)
            if not isinstance(obj, kind):
                raise ConfigError(f"{name} is not a {kind.__name__}")
            objects.append(obj)
    return objects


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final validation metrics."""
    validate_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule = instantiate(cfg.data)
    module_cls = get_class(cfg.module._target_) if cfg.get("module") else CompressionModule
    module = module_cls(to_container(cfg))
    if cfg.get("init_from") and not cfg.get("ckpt_path"):
        copied, skipped = copy_matching_weights(module.model, load_state_dict_file(cfg.init_from))
        log.info(
            "initialised %d tensors from %s (%d skipped)", len(copied), cfg.init_from, len(skipped)
        )

    loggers: list[Logger] = _instantiate_dict(cfg.get("logger"), Logger)
    callbacks: list[Callback] = _instantiate_dict(cfg.get("callbacks"), Callback)
    if not loggers:
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.get("validate_after_fit") and not trainer.fast_dev_run:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        results = trainer.validate(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    for logger in loggers:
        logger.finalize("success")
    return metrics
