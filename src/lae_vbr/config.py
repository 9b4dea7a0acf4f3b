"""Hydra/OmegaConf helpers shared by the entry points."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import LaeVbrError
from .paths import REPO_ROOT, shared_dir

__all__ = [
    "CONF_DIR",
    "ConfigError",
    "app_groups",
    "register_resolvers",
    "spread_lmbdas",
    "to_container",
    "with_path_hint",
]

#: The config folder of a source checkout (where ``src/train.py`` and ``src/eval.py`` look).
CONF_DIR = REPO_ROOT / "conf"

#: Config keys that name folders or files, in the order a hint names them.
PATH_KEYS = (
    "ckpt_path",
    "init_from",
    "checkpoint",
    "test_dir",
    "data.train_dir",
    "data.val_dir",
    "data.test_dir",
    "paths.anchors_dir",
    "paths.data_dir",
    "study.calibration.dir",
    "stage.teachers",
    "high_ckpt",
    "low_ckpt",
)


class ConfigError(LaeVbrError):
    """A configuration that cannot run; the message says what to change."""


def register_resolvers() -> None:
    """The configs' resolvers (idempotent): ``${repo_root:}``, ``${shared_dir:}``,
    ``${len:list}``, ``${lmbda_spread:values,spread}`` and ``${app_groups:}`` (``--help``)."""
    for name, fn in (
        ("repo_root", lambda: str(REPO_ROOT)),
        ("shared_dir", lambda: str(shared_dir())),
        ("len", lambda seq: len(seq)),
        ("lmbda_spread", spread_lmbdas),
        ("app_groups", app_groups),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-dict copy (what checkpoints store: no pickled OmegaConf objects)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def spread_lmbdas(values: Sequence[float], spread: float = 1.0) -> list[float]:
    """A λ set stretched about its geometric mean on a log scale.

    ``spread`` multiplies every λ's log-distance from the set's geometric mean: 1 keeps the
    set (exactly), 2 squares the ratio between neighbours, 0.5 takes its square root. The
    hyper-parameter search varies it, so the range of rates a model covers is one number.
    """
    spread = float(spread)
    if not (math.isfinite(spread) and spread > 0):
        raise ConfigError(f"lmbda.spread={spread:g}: use a positive number (1 = the set as is)")
    floats = [float(v) for v in values]
    if spread == 1.0:
        return floats
    if any(v <= 0 for v in floats):
        raise ConfigError("lmbda.spread needs positive λ values")
    centre = sum(math.log(v) for v in floats) / len(floats)
    return [float(f"{math.exp(centre + spread * (math.log(v) - centre)):.6g}") for v in floats]


# -- --help ----------------------------------------------------------------------------------
def app_groups(*, _root_: DictConfig) -> str:
    """The config groups one entry point composes, each with its options (for ``--help``).

    Hydra's own list shows every group of the config folder, so ``train.py --help`` would
    offer the evaluation's studies and ``eval.py --help`` the trainers; this one lists the
    groups of the entry point's defaults tree only (``hydra.runtime.choices`` plus the
    primary config's own defaults list, which also holds the optional and list-valued ones).
    """
    hydra = _root_.hydra
    groups = {str(g) for g in hydra.runtime.choices if not str(g).startswith("hydra")}
    groups |= set(_primary_groups(CONF_DIR / f"{hydra.job.config_name}.yaml"))
    groups.discard("hydra")
    return "\n".join(f"{group}: {_options(group)}" for group in sorted(groups))


def _primary_groups(path: Path) -> Iterable[str]:
    if not path.is_file():
        return []
    defaults = OmegaConf.load(path).get("defaults") or []
    for entry in defaults:
        if isinstance(entry, DictConfig):
            for key in entry:
                yield str(key).split()[-1]  # "optional local" -> "local"


def _options(group: str) -> str:
    names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    if group == "local" and not names:
        return "(none: machine-specific settings go in conf/local/default.yaml, git-ignored)"
    return ", ".join(names) or "(none)"


# -- hints for missing paths ---------------------------------------------------------------
def with_path_hint(message: str, cfg: DictConfig) -> str:
    """``message`` plus which config key to set when it names a missing configured path.

    Errors raised deep inside a task ("image folder X does not exist", "unknown anchor
    'vtm' (X has none)") know the path, not the key it came from; the entry point does. A
    path under a shared data folder that does not exist adds how to point at one.
    """
    named = [(k, v) for k, v in _missing_paths(cfg) if _names_path(message, v)]
    hints = [f"set {key}=<path>" for key, _ in named if f"{key}=" not in message]
    if any(key == "paths.anchors_dir" for key, _ in named):
        hints.append("or anchors=[] to run without published curves")
    root = Path(str(OmegaConf.select(cfg, "paths.shared_dir", default="") or shared_dir()))
    if not root.is_dir() and any(Path(v).is_relative_to(root) for _, v in named):
        hints.append(
            f"it is under the shared data folder {root}, which does not exist: point "
            "LAE_VBR_SHARED (or paths.shared_dir) at one; python scripts/get_test_data.py "
            "downloads Kodak and the published anchors into it"
        )
    return f"{message}; {'; '.join(hints)}" if hints else message


def _names_path(message: str, path: str) -> bool:
    """Whether ``message`` mentions ``path`` itself (not merely a path inside it)."""
    return re.search(re.escape(path) + r"(?![\w/.-])", message) is not None


def _missing_paths(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, value) of the configured paths that do not exist, one key per value."""
    found: dict[str, str] = {}
    for key in PATH_KEYS:
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # an interpolation that cannot resolve: not a path we can name
            continue
        if isinstance(value, str) and value and not os.path.exists(value):
            found.setdefault(value, key)
    return [(key, value) for value, key in found.items()]
