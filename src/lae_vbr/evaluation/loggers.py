"""Sending an evaluation to the configured experiment loggers (``logger=wandb|csv|many``).

Every logger gets the model curve's per-point metrics (one step per point, in bpp order); a
W&B logger also gets the R-D points of all measured curves and the BD-rates as tables, the
R-D plot, and the BD-rates in the run summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, fields
from os import PathLike
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from .bdrate import BDResult
from .results import RDCurve

__all__ = ["send_to_loggers"]

_POINT_COLUMNS = ["bpp", "psnr-rgb", "psnr-rgb-mean-mse", "ms-ssim-rgb-db", "lmbda_idx"]


def _instantiate(node: Mapping[str, Any] | None) -> list[Any]:
    return [
        instantiate(sub)
        for sub in (node or {}).values()
        if isinstance(sub, DictConfig) and "_target_" in sub
    ]


def _point_rows(curves: Sequence[RDCurve]) -> list[list[Any]]:
    rows = []
    for curve in curves:
        n = len(curve.results["bpp"])
        columns = [curve.metric(k) or [None] * n for k in _POINT_COLUMNS]
        rows += [[curve.name, *[col[i] for col in columns]] for i in range(n)]
    return rows


def send_to_loggers(
    logger_cfg: Mapping[str, Any] | None,
    curves: Sequence[RDCurve],
    bd_rates: Sequence[BDResult],
    plot: str | PathLike,
) -> None:
    """Send an evaluation to every logger configured under ``logger`` (none: nothing)."""
    loggers = _instantiate(logger_cfg)
    if not loggers:
        return
    from lightning.pytorch.loggers import WandbLogger  # heavy import, only when logging

    model = next((c for c in curves if c.kind == "model"), None)
    for logger in loggers:
        for i in range(len(model.results["bpp"]) if model else 0):
            values = {f"eval/{k}": v[i] for k, v in model.results.items()}
            finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
            logger.log_metrics(finite, step=i)
        if isinstance(logger, WandbLogger):
            logger.log_table("eval/rd_points", ["curve", *_POINT_COLUMNS], _point_rows(curves))
            bd_columns = [f.name for f in fields(BDResult)]
            logger.log_table("eval/bd_rate", bd_columns, [list(astuple(r)) for r in bd_rates])
            logger.log_image("eval/rd_plot", images=[str(plot)])
            logger.experiment.summary.update(
                {f"bd_rate/{r.metric}/{r.test}/{r.anchor}": r.bd_rate for r in bd_rates}
            )
        logger.save()
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
