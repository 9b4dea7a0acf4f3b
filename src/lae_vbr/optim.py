"""Optimiser helpers: the parameter split of CompressAI training and the milestone schedule."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from torch import nn

__all__ = ["MilestoneFactors", "split_parameters"]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(main, auxiliary) trainable parameters: the entropy-bottleneck ``quantiles`` are
    trained by the auxiliary loss only."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (aux if name.endswith(".quantiles") else main).append(p)
    return main, aux


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
