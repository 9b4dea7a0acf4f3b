"""Train a codec: ``python src/train.py [experiment=vbr_tcm] [group=option ...] [key=value ...]``.

Configs live in ``conf/`` (``conf/train.yaml`` is the root); see the README for the groups,
multirun sweeps, hyper-parameter search, DDP and W&B usage.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lae_vbr.config import ConfigError, register_resolvers, with_path_hint
from lae_vbr.errors import LaeVbrError
from lae_vbr.extras import apply_extras
from lae_vbr.training import train

register_resolvers()
log = logging.getLogger("train")


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The scalar a sweeper optimises: ``optimized_metric`` (default: the mean validation RD
    loss, ``val/loss``); an explicitly chosen metric the run did not produce is an error."""
    name = cfg.get("optimized_metric")
    if name is None:
        return metrics.get("val/loss")
    if name not in metrics:
        available = ", ".join(sorted(metrics)) or "none"
        raise ConfigError(f"optimized_metric={name} was not logged; the run logged: {available}")
    return metrics[name]


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        apply_extras(cfg)
        return optimized_value(cfg, train(cfg))
    except LaeVbrError as err:  # a configuration, checkpoint or data problem: one line
        log.error("%s", with_path_hint(str(err), cfg))
        sys.exit(1)


if __name__ == "__main__":
    main()
