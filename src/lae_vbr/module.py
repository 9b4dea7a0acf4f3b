"""LightningModule training any CompressAI-style codec with the λ-sampled RD loss.

Manual optimisation, as in CompressAI: the main Adam updates the network, an auxiliary Adam
the entropy-bottleneck quantiles. Both gradients come from one backward pass (the aux loss
reaches only the quantiles, the RD loss never does), which keeps DDP to one gradient
all-reduce per step. ``trainer.global_step`` counts main-optimiser steps.

Lightning's own ``accumulate_grad_batches`` and ``gradient_clip_val`` do not apply to manual
optimisation, so the loop does both itself (``optim.accumulate_grad_batches``,
``optim.clip_max_norm`` / ``optim.clip_algorithm``; the training task moves the Trainer's
options there): gradients of k batches are summed (each loss divided by k), clipped once, and
the optimisers step on every k-th batch and on the last batch of an epoch. Under DDP the
batches in between skip the gradient all-reduce.

The module takes its parts as objects (the codec, the loss, the optimiser options;
``CompressionModule.from_config(cfg)`` builds them from a composed config). The config is
stored in the checkpoint (``hyper_parameters.cfg``) with the codec description, so
``CompressionModule.load_from_checkpoint(path, weights_only=True)`` rebuilds the module.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning import LightningModule
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

from .config import ConfigError
from .errors import LaeVbrError
from .losses import MIN_MSSSIM_SIDE, RateDistortionLoss, bits_per_pixel, psnr_from_mse
from .models.composed import LearnedCodec
from .models.registry import describe_config
from .optim import build_optimizers
from .visualize import log_images, rd_figure

__all__ = ["CompressionModule"]


class CompressionModule(LightningModule):
    """Training and validation of a codec with the λ-sampled rate-distortion loss.

    Args:
        model: the codec (a :class:`~lae_vbr.models.composed.LearnedCodec`).
        loss: the λ-sampled loss, its λ set the model's.
        optim: the optimiser options: ``optimizer`` and ``aux_optimizer`` (``_partial_``
            configs), ``param_groups``, ``clip_max_norm``, ``clip_algorithm``,
            ``accumulate_grad_batches``, ``scheduler``.
        compile: ``torch.compile`` of the codec's forward: false, true or its options.
        channels_last: NHWC weights and activations.
        cfg: the composed config the run was made from, stored in checkpoints as provenance
            (the codec description checkpoints carry is made from it). Given alone (as
            ``load_from_checkpoint`` does), the parts are built from it (:meth:`arguments`).

    From a config: ``CompressionModule.from_config(cfg)``.
    """

    def __init__(
        self,
        model: LearnedCodec | None = None,
        loss: RateDistortionLoss | None = None,
        optim: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] | None = None,
        channels_last: bool = False,
        cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": dict(cfg or {})})
        if model is None or loss is None:  # load_from_checkpoint: built from the stored config
            parts = CompressionModule.arguments(cfg or {})
            model, loss, optim = parts["model"], parts["loss"], parts["optim"]
            compile, channels_last = parts["compile"], parts["channels_last"]
        self.model: LearnedCodec = model
        self.loss: RateDistortionLoss = loss
        self.optim_cfg = dict(optim or {})
        _check_lambda_set(self.model, self.loss)
        _check_quality_maps(self.model, self.loss)
        self.automatic_optimization = False
        self.val_metrics = torch.nn.ModuleList(
            MetricCollection(
                {
                    "bpp": MeanMetric(),
                    "psnr": MeanMetric(),
                    "ms_ssim": MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0),
                    "loss": MeanMetric(),
                }
            )
            for _ in range(self.loss.num_lmbdas)
        )
        self._val_images: list[tuple[Tensor, dict[int, Tensor]]] = []
        self.accumulate = _positive_int(self.optim_cfg.get("accumulate_grad_batches", 1))
        self.compile_options = compile_options(compile)
        # NHWC activations: faster convolutions on GPUs with tensor cores (cuDNN) under bf16.
        self.channels_last = bool(channels_last)
        # torch.compile of self.model, made in setup(); kept out of the module tree so state
        # dicts and checkpoints keep their plain keys (no ``_orig_mod.``).
        self._compiled: Callable[..., dict] | None = None

    @classmethod
    def arguments(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's parts built from a composed config (``model``, ``loss``, ``optim``,
        ``compile``, ``channels_last``); subclasses add theirs."""
        return {
            "model": build_model(cfg["model"]),
            "loss": instantiate(cfg["loss"]),
            "optim": dict(cfg.get("optim") or {}),
            "compile": cfg.get("compile"),
            "channels_last": bool(cfg.get("channels_last", False)),
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> CompressionModule:
        """The module of a composed config (what ``src/train.py`` builds): its parts built
        first (:meth:`arguments`), then given to the constructor as objects."""
        return cls(**cls.arguments(cfg), cfg=cfg)

    def setup(self, stage: str) -> None:
        """Convert to channels_last (``channels_last=true``) and compile the model's forward
        once, for fitting (``compile=true`` or options)."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.compile_options is not None and self._compiled is None:
            # via __dict__: nn.Module.__setattr__ would register the wrapper as a submodule
            self.__dict__["_compiled"] = torch.compile(self.model, **self.compile_options)

    # -- model calls --------------------------------------------------------------------
    def forward(self, x: Tensor, lmbda_idx: Tensor | float | None = None) -> dict:
        # `is not None`: a compiled module has no truth value (its __len__ raises)
        model = self._compiled if self._compiled is not None else self.model
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x, lmbda_idx)

    def extra_loss_terms(self, out: Mapping, x: Tensor, lmbda_idx: Tensor) -> dict[str, Tensor]:
        """Additional named loss terms; subclasses (e.g. the LAE warm-up stage) add theirs."""
        return {}

    # -- training -----------------------------------------------------------------------
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        x = batch
        opt, aux_opt = self.optimizers()
        latent_shape = self.model.latent_shape(*x.shape[-2:])
        lmbda_idx = self.loss.sample_rate(x.shape[0], latent_shape).to(x.device)
        out = self(x, lmbda_idx)
        terms = self.loss(out, x, lmbda_idx)
        extra = self.extra_loss_terms(out, x, lmbda_idx)
        loss = terms["loss"] + sum(extra.values(), torch.zeros((), device=x.device))
        aux_loss = self.model.aux_loss()

        step_now = self._last_of_accumulation(batch_idx)
        with self._backward_sync(step_now):
            self.manual_backward((loss + aux_loss) / self.accumulate)
        if step_now:
            self._step(opt, aux_opt)

        log = {"train/loss": loss, "train/rd_loss": terms["loss"], "train/aux_loss": aux_loss}
        log |= {"train/bpp": terms["bpp_loss"], "train/psnr": terms["psnr"].mean()}
        log |= {f"train/{k}": v for k, v in extra.items()}
        self.log_dict(log, on_step=True, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=x.shape[0])
        return loss

    def _last_of_accumulation(self, batch_idx: int) -> bool:
        """Whether this batch completes an accumulation (every k-th, and an epoch's last)."""
        if self.accumulate == 1:
            return True
        last = self.trainer.num_training_batches
        return (batch_idx + 1) % self.accumulate == 0 or batch_idx + 1 >= last

    @contextlib.contextmanager
    def _backward_sync(self, step_now: bool) -> Iterator[None]:
        """Skip the DDP gradient all-reduce on batches that only accumulate."""
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        if step_now or block is None:
            yield
        else:
            with block():
                yield

    def _step(self, opt: Any, aux_opt: Any) -> None:
        """Clip, step both optimisers (and a per-step scheduler), clear the gradients."""
        clip = float(self.optim_cfg.get("clip_max_norm") or 0.0)
        if clip > 0:
            algorithm = str(self.optim_cfg.get("clip_algorithm", "norm"))
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
        opt.step()
        aux_opt.optimizer.step()  # the raw optimiser: global_step counts main steps only
        opt.zero_grad()
        aux_opt.optimizer.zero_grad()
        if self.optim_cfg.get("scheduler", {}).get("interval", "epoch") == "step":
            self.lr_schedulers().step()

    def on_train_epoch_end(self) -> None:
        if self.optim_cfg.get("scheduler", {}).get("interval", "epoch") == "epoch":
            self.lr_schedulers().step()

    def configure_optimizers(self) -> tuple[list, list]:
        return build_optimizers(self.model, self.optim_cfg)

    # -- validation ---------------------------------------------------------------------
    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        x = batch
        num_pixels = x.shape[-2] * x.shape[-1]
        large = min(x.shape[-2:]) >= MIN_MSSSIM_SIDE
        recons: dict[int, Tensor] = {}
        for i, metrics in enumerate(self.val_metrics):
            idx = torch.full((x.shape[0],), float(i), device=x.device)
            out = self(x, idx)
            x_hat = out["x_hat"].clamp(0, 1)
            mse = (x_hat - x).pow(2).flatten(1).mean(dim=1)
            metrics["bpp"].update(bits_per_pixel(out["likelihoods"], num_pixels))
            metrics["psnr"].update(psnr_from_mse(mse))
            if large:
                metrics["ms_ssim"].update(x_hat, x)
            if large or self.loss.distortion == "mse":
                metrics["loss"].update(self.loss(out, x, idx)["per_sample_loss"])
            if batch_idx == 0:
                recons[i] = x_hat[:1].detach().cpu()
        if recons:
            self._val_images = [(x[:1].detach().cpu(), recons)]

    def on_validation_epoch_end(self) -> None:
        points = []
        losses = []
        for i, metrics in enumerate(self.val_metrics):
            values: dict[str, float] = {}
            for name, metric in metrics.items():
                # Every process computes every metric: compute() syncs the states across
                # processes, also those that saw no image for it (NaN when none did).
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "The ``compute`` method of metric")
                    value = float(metric.compute())
                metric.reset()
                if math.isfinite(value):
                    values[name] = value
                    self.log(f"val/{name}/l{i}", value, sync_dist=False)
            if "loss" in values:
                losses.append(values["loss"])
            if "bpp" in values:
                points.append((i, values["bpp"], values["psnr"], values.get("ms_ssim")))
        if losses:
            self.log("val/loss", sum(losses) / len(losses), prog_bar=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking and points:
            rd_figure(self, points)
            if self._val_images:
                log_images(self, *self._val_images[0])
        self._val_images = []

    # -- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store up-to-date CDF tables, so a checkpoint can be used for real coding at once.

        With weight averaging (``lae_vbr.callbacks.EMA``) the callback has already stored the
        averaged weights with their own tables (and the live ones as ``current_model_state``).
        The codec's description (``lae_vbr.description``) names the model for loaders.
        """
        description = describe_config(self.hparams["cfg"])
        if description is not None:
            checkpoint["codec"] = description
        if "current_model_state" in checkpoint:
            return
        self.model.update(force=True)
        checkpoint["state_dict"] = self.state_dict()


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"optim.accumulate_grad_batches={value!r}: use a whole number of batches, 1 or more"
        )
    return value


def compile_options(value: Any) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments from the ``compile`` key: false/null (off), true
    (defaults) or a mapping such as ``{mode: max-autotune}``."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"compile={value!r}: use true, false or torch.compile options")


def build_model(model_cfg: Mapping[str, Any]) -> LearnedCodec:
    """Instantiate ``cfg.model``; a model that refuses its arguments becomes a ConfigError."""
    try:
        return instantiate(model_cfg)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, LaeVbrError):
            raise ConfigError(f"model: {cause}") from cause
        raise


def _check_quality_maps(model: LearnedCodec, loss: RateDistortionLoss) -> None:
    """Quality-map training needs a model that takes λ-index maps (one with LAEs)."""
    if loss.quality_maps is not None and not model.takes_rate_map:
        raise ConfigError(
            f"loss.quality_maps: {model.no_rate_map_error()}; train maps with model/rate=lae "
            "(or lae_no_context, lae_encoder_only), or set loss=rd"
        )


def _check_lambda_set(model: LearnedCodec, loss: RateDistortionLoss) -> None:
    """The model takes exactly as many λ indices as the loss draws."""
    if model.num_lmbdas != loss.num_lmbdas:
        kind = "variable" if model.num_lmbdas > 1 else "fixed"
        raise ConfigError(
            f"the {kind}-rate model takes {model.num_lmbdas} λ value(s) but lmbda.values has "
            f"{loss.num_lmbdas}; use lmbda=single for a fixed-rate model (model/rate=fixed) or "
            "a set of at least two λ (e.g. lmbda=paper_mse) for a variable-rate one"
        )
