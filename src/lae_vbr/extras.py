"""Conveniences around a training run (the ``extras`` config group), and console hygiene.

As in lightning-hydra-template: the composed config printed as a tree before training (and
saved as ``config_tree.log`` in the run folder), and warnings known to be harmless silenced.
Lightning's advertising tips ("💡 Tip: … litlogger / litmodels") are always dropped: they
say nothing about the run and repeat in every job's log.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

__all__ = ["KNOWN_WARNINGS", "apply_extras", "print_config_tree", "silence_lightning_tips"]

log = logging.getLogger(__name__)

#: (message regex, category) of warnings that are expected in this project's runs and say
#: nothing actionable: deprecations inside dependencies, advice about choices made on purpose.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # Lightning's own use of a torch pytree API deprecated in recent PyTorch
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    # CompressAI scripts helpers with torch.jit at import time
    (r".*torch\.jit\.script.*", FutureWarning),
    # short runs (debug, quickstart) log less often than every 10 steps: expected
    (r".*The number of training batches .* is smaller than the logging interval", Warning),
)

#: Order of the tree's top-level branches; the other keys follow in config order.
TREE_ORDER = ("data", "model", "lmbda", "loss", "optim", "trainer", "callbacks", "logger")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_TIP_FILTER = _DropTips()


def silence_lightning_tips() -> None:
    """Drop Lightning's "💡 Tip: …" log lines (litlogger, litmodels); idempotent."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)


def ignore_known_warnings() -> None:
    for pattern, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def apply_extras(cfg: DictConfig) -> None:
    """Apply ``cfg.extras`` (absent or empty: nothing but the tip filter)."""
    silence_lightning_tips()
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        ignore_known_warnings()
    if extras.get("print_config"):
        try:
            output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
        except Exception:  # outside a Hydra run ${hydra:...} does not resolve
            output_dir = None
        print_config_tree(cfg, save_dir=Path(output_dir) if output_dir else None)


@rank_zero_only
def print_config_tree(
    cfg: DictConfig,
    order: Iterable[str] = TREE_ORDER,
    resolve: bool = False,
    save_dir: Path | None = None,
) -> None:
    """Print the config as a rich tree, one branch per top-level key, and save it to
    ``save_dir/config_tree.log``. Rich writes colour only to a terminal, so logs stay plain."""
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    tree = Tree("CONFIG", guide_style="dim")
    for key in keys:
        value = cfg[key]
        nested = isinstance(value, (DictConfig, ListConfig))
        text = OmegaConf.to_yaml(value, resolve=resolve) if nested else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    Console().print(tree)
    if save_dir is not None and save_dir.is_dir():
        with open(save_dir / "config_tree.log", "w", encoding="utf-8") as file:
            Console(file=file, no_color=True, width=100).print(tree)
