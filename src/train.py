"""Train a codec: ``python src/train.py [experiment=vbr_tcm] [group=option ...] [key=value ...]``.

Configs live in ``conf/`` (``conf/train.yaml`` is the root); see the README for the groups,
multirun sweeps, DDP and W&B usage.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lae_vbr.config import register_resolvers
from lae_vbr.errors import LaeVbrError
from lae_vbr.training import train

register_resolvers()
log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except LaeVbrError as err:  # a configuration, checkpoint or data problem: one line
        log.error("%s", err)
        sys.exit(1)
    # A scalar for sweepers that optimise (e.g. Optuna): the mean validation RD loss.
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
