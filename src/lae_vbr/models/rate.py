"""The rate interface shared by every codec: a λ index into the trained λ set.

A model trained for ``num_lmbdas`` values of λ takes a (possibly fractional) λ index in
``[0, num_lmbdas − 1]``; a fixed-rate model is the one-λ case and takes only index 0. This
module holds the two rules every caller relies on, written once:

* :func:`lmbda_input`: the validity rule (range, finiteness, one index or one per image, or a
  map of indices at latent resolution: region-of-interest coding);
* :func:`interpolate_log_linear` / :func:`index_of_value`: λ ↔ index, log-linear between
  the trained values (fractional indices give rates between the trained points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lae_vbr.errors import RateError
from lae_vbr.rate_axis import index_of_value

__all__ = [
    "LambdaIndex",
    "RateError",
    "index_of_value",
    "interpolate_log_linear",
    "is_rate_map",
    "lmbda_input",
    "value_of_index",
]

#: What the models accept as a rate argument: one λ index, one per image, or a λ-index map
#: (B or 1, 1, h, w) at the latent's resolution (see :func:`is_rate_map`).
LambdaIndex = float | Sequence[float] | Tensor


def is_rate_map(lmbda_idx: object) -> bool:
    """Whether a rate argument is a λ-index map: a 4-D tensor (B or 1, 1, h, w), one index per
    latent position (region-of-interest coding), rather than one index per image."""
    return isinstance(lmbda_idx, Tensor) and lmbda_idx.dim() == 4


def lmbda_input(
    lmbda_idx: LambdaIndex, batch: int, num_lmbdas: int, device: torch.device | str
) -> Tensor:
    """λ indices as a float32 tensor of shape (batch,), or (batch, 1, h, w) for a map, checked
    against the trained range.

    One index (or one map) is broadcast over the batch. RateError for a count that is not 1 or
    ``batch``, a map that is not (B or 1, 1, h, w), and an index that is not finite or lies
    outside [0, num_lmbdas − 1].
    """
    if is_rate_map(lmbda_idx):
        t = lmbda_idx.to(device=device, dtype=torch.float32)  # type: ignore[union-attr]
        if t.shape[0] not in (1, batch) or t.shape[1] != 1:
            raise RateError(
                f"a λ-index map must be (batch or 1, 1, height, width), got {tuple(t.shape)} "
                f"for a batch of {batch}"
            )
        t = t.expand(batch, -1, -1, -1)
    else:
        t = torch.as_tensor(lmbda_idx, dtype=torch.float32, device=device).reshape(-1)
        if t.numel() == 1 and batch != 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise RateError(f"got {t.numel()} λ indices for a batch of {batch}")
    hi = num_lmbdas - 1
    bad = ~(torch.isfinite(t) & (t >= 0) & (t <= hi))
    if bad.any():
        value = t[bad][0].item()
        if hi == 0:
            raise RateError(f"λ index {value:g} given to a fixed-rate model (it takes none)")
        raise RateError(f"λ index {value:g} is outside the trained range [0, {hi}]")
    return t


def interpolate_log_linear(values: Tensor, lmbda_idx: Tensor) -> Tensor:
    """``values`` (one per trained λ) at fractional indices, log-linear between neighbours.

    Used for λ itself (the loss and latent refinement) and for the gains of the gain-based
    peer; indices are clamped to the trained range.
    """
    idx = lmbda_idx.to(values.device, values.dtype).clamp(0, values.numel() - 1)
    lo = idx.floor().long().clamp(max=max(values.numel() - 2, 0))
    hi = (lo + 1).clamp(max=values.numel() - 1)
    frac = idx - lo.to(values.dtype)
    logs = values.log()
    return torch.exp(logs[lo] * (1 - frac) + logs[hi] * frac)


def value_of_index(values: Sequence[float], lmbda_idx: float) -> float:
    """The λ of one fractional index (a float); inverse of :func:`index_of_value`."""
    hi = len(values) - 1
    if not (math.isfinite(lmbda_idx) and 0 <= lmbda_idx <= hi):
        raise RateError(f"λ index {lmbda_idx:g} is outside the trained range [0, {hi}]")
    if float(lmbda_idx).is_integer():
        return float(values[int(lmbda_idx)])
    table = torch.tensor([float(v) for v in values], dtype=torch.float64)
    return float(interpolate_log_linear(table, torch.tensor([lmbda_idx]))[0])
