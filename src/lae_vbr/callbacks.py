"""Training callbacks beyond Lightning's own."""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning import Callback, LightningModule, Trainer

__all__ = ["ImagesPerSecond"]

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
