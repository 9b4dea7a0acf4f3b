"""Optimisers of CompressAI-style training: the main/auxiliary split, parameter groups and the
milestone schedule, built from ``optim`` configs (``_partial_`` optimisers)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from .config import ConfigError

__all__ = ["MilestoneFactors", "build_optimizers", "split_parameters"]

_DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}
_DEFAULT_AUX_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(main, auxiliary) trainable parameters: the entropy-bottleneck ``quantiles`` are
    trained by the auxiliary loss only."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (aux if name.endswith(".quantiles") else main).append(p)
    return main, aux


def _main_groups(model: nn.Module, groups: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Main parameters in groups: one per configured name prefix (with its options), then
    the rest (the optimiser's own options)."""
    main, _ = split_parameters(model)
    main_ids = {id(p) for p in main}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in main_ids]
    out: list[dict] = []
    taken: set[int] = set()
    for prefix, options in groups.items():
        params = [p for n, p in named if n.startswith(prefix) and id(p) not in taken]
        if not params:
            raise ConfigError(f"optim.param_groups: no trainable parameter starts with {prefix!r}")
        taken |= {id(p) for p in params}
        out.append({"params": params, **dict(options)})
    rest = [p for _, p in named if id(p) not in taken]
    return [*out, {"params": rest}] if rest else out


def build_optimizers(model: nn.Module, cfg: Mapping[str, Any]) -> tuple[list, list]:
    """``([main, aux], [scheduler])`` from the ``optim`` config: ``optimizer`` and
    ``aux_optimizer`` are ``_partial_`` optimiser configs, ``param_groups`` maps parameter-name
    prefixes to options of the main optimiser, ``scheduler`` the milestone LR schedule."""
    moved = sorted({"lr", "aux_lr"} & set(cfg))
    if moved:
        raise ConfigError(
            f"optim.{moved[0]} is now optim.optimizer.lr / optim.aux_optimizer.lr "
            "(the optimisers are _partial_ configs)"
        )
    groups = _main_groups(model, cfg.get("param_groups") or {})
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    opt = instantiate(cfg.get("optimizer") or _DEFAULT_OPTIMIZER)(groups)
    _, aux = split_parameters(model)
    aux_params = aux or [nn.Parameter(torch.zeros(1))]  # Lightning wants a second optimiser
    aux_opt = instantiate(cfg.get("aux_optimizer") or _DEFAULT_AUX_OPTIMIZER)(aux_params)
    sched_cfg = cfg.get("scheduler") or {}
    schedule = MilestoneFactors(sched_cfg.get("milestones", []), sched_cfg.get("factors", []))
    return [opt, aux_opt], [torch.optim.lr_scheduler.LambdaLR(opt, schedule)]


class MilestoneFactors:
    """LR multiplier that is ``factors[k]`` from ``milestones[k]`` on (1 before the first).

    The paper's schedule is ``milestones=[50, 100, 150]``, ``factors=[0.5, 0.1, 0.05]``
    (absolute factors of the initial LR, not cumulative). A plain object, so LambdaLR's
    state dict stays loadable with ``weights_only=True``.
    """

    def __init__(self, milestones: Sequence[int], factors: Sequence[float]) -> None:
        if len(milestones) != len(factors):
            raise ValueError("milestones and factors must have the same length")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self.milestones = [int(m) for m in milestones]
        self.factors = [float(f) for f in factors]

    def __call__(self, step: int) -> float:
        k = bisect_right(self.milestones, step)
        return 1.0 if k == 0 else self.factors[k - 1]
