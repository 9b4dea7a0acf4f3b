"""Hydra/OmegaConf helpers shared by the entry points."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import LaeVbrError
from .paths import REPO_ROOT, shared_dir

__all__ = ["ConfigError", "register_resolvers", "to_container"]


class ConfigError(LaeVbrError):
    """A configuration that cannot run; the message says what to change."""


def register_resolvers() -> None:
    """``${repo_root:}``, ``${shared_dir:}`` and ``${len:list}`` for the configs (idempotent)."""
    for name, fn in (
        ("repo_root", lambda: str(REPO_ROOT)),
        ("shared_dir", lambda: str(shared_dir())),
        ("len", lambda seq: len(seq)),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-dict copy (what checkpoints store: no pickled OmegaConf objects)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
