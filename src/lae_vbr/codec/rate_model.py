"""The logarithmic R-λ model: an image coded at λ index i takes Σ log₂ m_i + C bits.

``m_i`` is the encoder-side LAE mask at λ index i and ``C`` depends on the image only (the
paper's claim: scaling a latent by m before unit quantisation adds about log₂ m bits). The
analysis transform ``y = g_a(x)`` does not depend on λ, so after one analysis pass
:class:`RateModel` prices any number of λ indices with the LAE alone: no entropy model, no
coding. One real encode gives ``C``; the fitting helpers measure how well the model holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lae_vbr.models.composed import ComposedCodec
from lae_vbr.models.padding import pad_image
from lae_vbr.models.rate import RateError

from .container import to_float32

__all__ = ["LineFit", "RateModel", "fit_line"]


class RateModel:
    """Σ log₂ m over the latent of one image, for any λ index, from one analysis pass.

    Args:
        model: a variable-rate codec with an encoder-side LAE.
        x: one image, (1, 3, H, W) or (3, H, W) in [0, 1]; padded as the codec pads it.
        chunk: λ indices evaluated per LAE call (they share the latent, batched).
    """

    def __init__(self, model: ComposedCodec, x: Tensor, chunk: int = 16) -> None:
        if not isinstance(model, ComposedCodec) or model.modnet_ga is None:
            raise RateError(
                "the R-λ model needs a variable-rate model with an encoder-side LAE; "
                f"got {type(model).__name__}"
            )
        x = x.unsqueeze(0) if x.dim() == 3 else x
        self.model = model
        self.num_pixels = int(x.shape[-2] * x.shape[-1])
        self.max_index = float(model.num_lmbdas - 1)
        self.chunk = chunk
        device = next(model.parameters()).device
        with torch.inference_mode():
            self.y = model.g_a(pad_image(x.to(device), model.pad_multiple))  # before the LAE

    def log2_mask_sum(self, lmbda_idx: float | Sequence[float] | Tensor) -> np.ndarray:
        """Σ log₂ m (bits) at each λ index (rounded to the float32 a file stores)."""
        idx = torch.as_tensor(lmbda_idx, dtype=torch.float32).reshape(-1)
        sums = []
        for part in idx.split(self.chunk):
            y = self.y.expand(len(part), -1, -1, -1)
            sums.append(self.model.log2_mask_sum(y, part.to(y.device)).double().cpu())
        return torch.cat(sums).numpy()

    def bits(self, lmbda_idx: float) -> float:
        """Σ log₂ m at one λ index."""
        return float(self.log2_mask_sum([lmbda_idx])[0])

    def solve(
        self, goal_bits: float, grid: int = 17, iterations: int = 24
    ) -> tuple[float, str | None]:
        """The λ index where Σ log₂ m equals ``goal_bits``: a batched grid over [0, max] finds
        the bracket, bisection narrows it.

        Σ log₂ m grows with the index for a trained LAE. A goal beyond the reachable values
        returns the index of the nearest one and ``"low"`` or ``"high"``; otherwise None.
        """
        if not math.isfinite(goal_bits):
            raise RateError(f"cannot solve for a rate of {goal_bits} bits")
        knots = np.linspace(0.0, self.max_index, grid)
        sums = self.log2_mask_sum(knots)
        if goal_bits <= sums.min():
            return float(knots[sums.argmin()]), "low"
        if goal_bits >= sums.max():
            return float(knots[sums.argmax()]), "high"
        # the first knot interval whose ends straddle the goal
        k = int(np.flatnonzero((sums[:-1] - goal_bits) * (sums[1:] - goal_bits) <= 0)[0])
        lo, hi, rising = knots[k], knots[k + 1], sums[k + 1] >= sums[k]
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if (self.bits(mid) < goal_bits) == rising:
                lo = mid
            else:
                hi = mid
        return to_float32(0.5 * (lo + hi)), None


@dataclass(frozen=True)
class LineFit:
    """``R ≈ slope·S + offset`` over one image's λ sweep, with its goodness of fit."""

    slope: float
    offset: float
    r2: float
    residuals: np.ndarray  # R − prediction, in bits

    def predict(self, s_bits: float | np.ndarray) -> float | np.ndarray:
        return self.slope * np.asarray(s_bits) + self.offset


def fit_line(
    s_bits: Sequence[float], r_bits: Sequence[float], slope: float | None = 1.0
) -> LineFit:
    """Least-squares line through (S, R): slope fixed (1 = the theory) or free (None)."""
    s, r = np.asarray(s_bits, float), np.asarray(r_bits, float)
    if len(s) < 2:
        raise ValueError("fitting the R-λ model needs at least two λ points")
    if slope is None:
        slope, offset = (float(v) for v in np.polyfit(s, r, 1))
    else:
        offset = float(np.mean(r - slope * s))
    residuals = r - (slope * s + offset)
    total = float(np.sum((r - r.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residuals**2)) / total if total > 0 else math.nan
    return LineFit(float(slope), offset, r2, residuals)
