"""Training callbacks beyond Lightning's own."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging

__all__ = ["EMA", "ImagesPerSecond"]

log = logging.getLogger(__name__)


class ImagesPerSecond(Callback):
    """Training throughput, logged as ``train/images_per_sec`` once per epoch.

    Counts the time from the start to the end of each training step (forward, backward,
    optimiser), not data loading or validation, so recipes on different machines compare by
    compute. Under DDP the processes' rates are summed: the throughput of the whole job.
    """

    def __init__(self) -> None:
        self._images = 0
        self._seconds = 0.0
        self._start = 0.0
        self.history: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._images, self._seconds = 0, 0.0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._seconds += time.perf_counter() - self._start
        self._images += len(batch)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._seconds > 0:
            rate = self._images / self._seconds
            self.history.append(rate)
            pl_module.log("train/images_per_sec", rate, reduce_fx="sum", sync_dist=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.history and trainer.is_global_zero:
            mean = sum(self.history) / len(self.history)
            log.info("training throughput: %.2f images/s per process (mean over %d epochs)",
                     mean, len(self.history))  # fmt: skip


class EMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, fitted to codecs.

    Validation runs on the averaged weights and training ends with them in the model, as in
    Lightning's callback; checkpoints hold the averaged weights as ``state_dict`` (what
    ``load_codec`` and ``lae-vbr --checkpoint`` use) and the live ones for resuming.

    What differs: only parameters are averaged and swapped. A codec's buffers are derived
    (entropy-coder CDF tables, rebuilt by ``update()`` with sizes that change) or constant, so
    averaging them is meaningless and swapping them breaks on the size change; and the tables
    stored with the averaged weights are rebuilt from those weights, so a checkpoint codes
    correctly at once.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: str | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(
            device=device,
            use_buffers=False,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self._average_model is not None:
            self._match_buffer_shapes(pl_module)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)

    def _match_buffer_shapes(self, pl_module: LightningModule) -> None:
        """Give the averaged copy's buffers the live model's shapes: ``update()`` (at every
        checkpoint and validation) rebuilds the live CDF tables with new sizes, and torch's
        averaging then copies buffers into the copy's old, differently sized ones."""
        assert self._average_model is not None
        for average, current in zip(
            self._average_model.module.buffers(), pl_module.buffers(), strict=True
        ):
            if average.shape != current.shape:
                average.data = torch.empty_like(current, device=average.device)

    def _swap_models(self, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        for average, current in zip(
            self._average_model.module.parameters(), pl_module.parameters(), strict=True
        ):
            tmp = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        for average, current in zip(
            self._average_model.module.parameters(), pl_module.parameters(), strict=True
        ):
            current.data.copy_(average.data)

    @contextmanager
    def _averaged(self, pl_module: LightningModule) -> Iterator[None]:
        self._swap_models(pl_module)
        try:
            yield
        finally:
            self._swap_models(pl_module)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:  # outside fitting: Lightning's behaviour
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        model = getattr(pl_module, "model", None)
        with self._averaged(pl_module):
            if model is not None:
                model.update(force=True)  # the averaged weights' own tables
            averaged = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if model is not None:
            model.update(force=True)
        checkpoint["current_model_state"] = pl_module.state_dict()
        checkpoint["state_dict"] = averaged
        checkpoint["averaging_state"] = {"n_averaged": self._average_model.n_averaged.clone()}

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None or "current_model_state" not in checkpoint:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
            return
        with torch.no_grad():
            pl_module.load_state_dict(checkpoint["state_dict"])
            self._average_model.module.load_state_dict(pl_module.state_dict())
            pl_module.load_state_dict(checkpoint["current_model_state"])
        averaging = checkpoint.get("averaging_state") or {}
        if "n_averaged" in averaging:
            self._average_model.n_averaged.copy_(averaging["n_averaged"])
