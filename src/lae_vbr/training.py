"""The training task behind ``src/train.py``: check the config, build everything, fit.

Everything that would otherwise fail minutes later inside Lightning, with a traceback, is
checked first and reported as one :class:`ConfigError` saying what to change: the crop size,
the λ set, the precision, the accelerator this machine has, the resume checkpoint, the
logger's package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, open_dict

from .config import ConfigError, to_container
from .extras import silence_lightning_tips
from .losses import MIN_MSSSIM_SIDE
from .models.state_dict import copy_matching_weights, load_state_dict_file
from .module import CompressionModule, compile_options

__all__ = [
    "PRECISIONS",
    "ConfigError",
    "check_resume_checkpoint",
    "move_manual_optimisation_options",
    "train",
    "validate_config",
]

log = logging.getLogger(__name__)

#: trainer.precision values training accepts. fp16 overflows in the entropy models, and
#: bf16-true would keep the entropy bottleneck's quantiles and CDF inputs in bf16.
PRECISIONS = ("32-true", "32", "bf16-mixed", "64-true", "64")
_REFUSED_PRECISIONS = {
    "16": "fp16",
    "16-mixed": "fp16",
    "16-true": "fp16",
    "bf16": "bf16 weights",
    "bf16-true": "bf16 weights",
}
#: Trainer options Lightning refuses under manual optimisation → the module's own options.
_MANUAL_OPTIONS = {
    "accumulate_grad_batches": "accumulate_grad_batches",
    "gradient_clip_val": "clip_max_norm",
    "gradient_clip_algorithm": "clip_algorithm",
}


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
    _check_accelerator(cfg.trainer)
    _check_precision(cfg.trainer)
    _check_optim(cfg.get("optim") or {})
    _check_compile(cfg)
    _check_loggers(cfg.get("logger"))
    if cfg.get("ckpt_path"):
        check_resume_checkpoint(cfg.ckpt_path)


def _on_cpu(trainer: Mapping[str, Any]) -> bool:
    """Whether the trainer will run on the CPU (``auto`` without a CUDA GPU included)."""
    name = _accelerator_name(trainer.get("accelerator"))
    return name == "cpu" or (name == "auto" and not torch.cuda.is_available())


def _check_compile(cfg: DictConfig) -> None:
    """``compile`` suits this run. Inductor (torch.compile's default backend) is refused on the
    CPU: there it builds one C++ kernel per fused op of the codec's forward and backward, and
    on the 2-core test machine a tcm_tiny quickstart ended in a segmentation fault after
    about 7 minutes of compiling, taking the run with it; the eager backend works there."""
    options = compile_options(cfg.get("compile"))
    if options is None:
        return
    if not _manual(cfg):
        raise ConfigError(
            f"compile applies to CompressionModule training, not {cfg.module._target_}"
        )
    backend = options.get("backend", "inductor")
    if backend == "inductor" and _on_cpu(cfg.trainer):
        raise ConfigError(
            "compile=true uses torch.compile's inductor backend, which crashes (segmentation "
            "fault) compiling this codec on the CPU; compile on a CUDA GPU, or use "
            "'compile={backend: eager}' on the CPU (checks the graph, no speed-up)"
        )


def _check_precision(trainer: Mapping[str, Any]) -> None:
    text = str(trainer.get("precision", "32-true"))
    if text in _REFUSED_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={text}: {_REFUSED_PRECISIONS[text]} is not supported (the "
            "entropy models overflow or lose their quantiles); use trainer.precision=32-true "
            "or bf16-mixed"
        )
    if text not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={text} is unknown; use one of {', '.join(PRECISIONS)}"
        )
    on_gpu = _accelerator_name(trainer.get("accelerator")) in ("gpu", "cuda", "auto")
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if text == "bf16-mixed" and on_gpu and torch.cuda.is_available() and not gpu_bf16:
        raise ConfigError("trainer.precision=bf16-mixed: this GPU has no bf16; use 32-true")


def _accelerator_name(value: Any) -> str:
    return str(value if value is not None else "auto").lower()


def _check_accelerator(trainer: Mapping[str, Any]) -> None:
    """The accelerator the trainer asks for exists here (Lightning's own error is a traceback
    ending in "No supported gpu backend found")."""
    name = _accelerator_name(trainer.get("accelerator"))
    if name in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"trainer.accelerator={name} but this machine has no CUDA GPU "
                "(torch.cuda.is_available() is False); use trainer=cpu"
            )
        wanted = trainer.get("devices")
        if isinstance(wanted, int) and wanted > count:
            raise ConfigError(
                f"trainer.devices={wanted} but this machine has {count} GPU(s); "
                f"use trainer.devices={count} or fewer"
            )
    elif name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps but MPS is not available here; use trainer=cpu")


def _check_optim(optim: Mapping[str, Any]) -> None:
    algorithm = optim.get("clip_algorithm", "norm")
    if algorithm not in ("norm", "value"):
        raise ConfigError(f"optim.clip_algorithm={algorithm}: use norm or value")
    accumulate = optim.get("accumulate_grad_batches", 1)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(
            f"optim.accumulate_grad_batches={accumulate}: use a whole number of batches, 1 or more"
        )


def _check_loggers(loggers: Mapping[str, Any] | None) -> None:
    for name, sub in (loggers or {}).items():
        target = str((sub or {}).get("_target_", "")) if isinstance(sub, Mapping) else ""
        if target.endswith("TensorBoardLogger") and not (
            find_spec("tensorboard") or find_spec("tensorboardX")
        ):
            raise ConfigError(
                f"logger {name} needs the tensorboard package: pip install tensorboard "
                "(or pip install -e '.[tensorboard]'), or choose logger=csv / wandb"
            )


def check_resume_checkpoint(path: str | Path) -> None:
    """``ckpt_path`` is a Lightning training checkpoint (weights, optimisers, step).

    Read memory-mapped, so a large checkpoint costs little to check before Lightning reads it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file; resume from a run's checkpoints/last.ckpt, "
            "or leave ckpt_path unset to start a new run"
        )
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # files in torch's legacy format cannot be mapped
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"ckpt_path={path} is not a PyTorch checkpoint ({type(err).__name__}); resume from "
            "a run's checkpoints/last.ckpt"
        ) from None
    training_state = ("state_dict", "optimizer_states", "global_step")
    if not (isinstance(obj, Mapping) and all(key in obj for key in training_state)):
        raise ConfigError(
            f"ckpt_path={path} holds weights but no training state (optimisers, step), so a "
            f"run cannot resume from it; to start a new run from its weights use init_from={path}"
        )


def _manual(cfg: DictConfig) -> bool:
    """Whether the configured LightningModule optimises manually (CompressionModule does)."""
    target = cfg.get("module", {}).get("_target_") if cfg.get("module") else None
    module_cls = get_class(target) if target else CompressionModule
    return issubclass(module_cls, CompressionModule)


def move_manual_optimisation_options(cfg: DictConfig) -> None:
    """Move ``trainer.accumulate_grad_batches`` / ``gradient_clip_val`` /
    ``gradient_clip_algorithm`` to the module's own ``optim`` options.

    Lightning refuses them under manual optimisation (at fit time, after the model is built);
    CompressionModule does both itself, so a user writes them where Lightning users do. The
    checkpoint then records the options that were in effect.
    """
    if not _manual(cfg):
        return
    with open_dict(cfg):
        for key, target in _MANUAL_OPTIONS.items():
            value = cfg.trainer.pop(key, None)
            if value is None or (key == "accumulate_grad_batches" and value == 1):
                continue  # unset, or Lightning's neutral default
            current = cfg.optim.get(target)
            if key == "accumulate_grad_batches" and current not in (None, 1, value):
                raise ConfigError(
                    f"trainer.accumulate_grad_batches={value} and "
                    f"optim.accumulate_grad_batches={current} disagree; set one of them"
                )
            cfg.optim[target] = value
            log.info("trainer.%s=%s applies as optim.%s (manual optimisation)", key, value, target)


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
    silence_lightning_tips()
    move_manual_optimisation_options(cfg)
    resume_if_requested(cfg)
    validate_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule = instantiate(cfg.data)
    module_cls = get_class(cfg.module._target_) if cfg.get("module") else CompressionModule
    module = module_cls.from_config(to_container(cfg))
    if cfg.get("init_from") and not cfg.get("ckpt_path"):
        copied, skipped = copy_matching_weights(module.model, load_state_dict_file(cfg.init_from))
        log.info(
            "initialised %d tensors from %s (%d skipped)", len(copied), cfg.init_from, len(skipped)
        )

    loggers: list[Logger] = _instantiate_dict(cfg.get("logger"), Logger)
    keep_csv_history(loggers)
    callbacks: list[Callback] = _instantiate_dict(cfg.get("callbacks"), Callback)
    if not loggers:
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.get("validate_after_fit") and not trainer.fast_dev_run:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if best and not Path(best).is_file():  # a resumed run's record of a file since replaced
            best = None
        results = trainer.validate(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    _finish(loggers)
    return metrics


def resume_if_requested(cfg: DictConfig) -> None:
    """With ``auto_resume``, a run whose folder already holds ``checkpoints/last.ckpt`` continues
    from it (``ckpt_path`` given explicitly wins); a finished run then ends at once."""
    if not cfg.get("auto_resume") or cfg.get("ckpt_path"):
        return
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        cfg.ckpt_path = str(last)
        log.info("auto_resume: continuing from %s", last)


def keep_csv_history(loggers: list[Logger]) -> list[Path]:
    """Move each CSV logger's ``metrics.csv`` aside (``metrics.1.csv``, ``metrics.2.csv``, …)
    before the logger starts; the files moved.

    Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds in its folder when it starts,
    and a resumed run (``ckpt_path``, ``auto_resume``) logs to the folder of its first part: the
    claims study's runs, resumed three to five times each, kept only their last part's rows."""
    moved = []
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        metrics = Path(logger.log_dir) / "metrics.csv"
        if metrics.is_file():
            part = 1
            while (aside := metrics.with_name(f"metrics.{part}.csv")).exists():
                part += 1
            moved.append(metrics.rename(aside))
    return moved


def _finish(loggers: list[Logger]) -> None:
    """Finalise the loggers; a W&B run is finished here, not at interpreter exit, where it
    would print its summary with colour codes into redirected logs and stay open across the
    jobs of a multirun."""
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
