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
from torch import Tensor

from lae_vbr.models.composed import LearnedCodec
from lae_vbr.models.rate import RateError

from .container import to_float32

__all__ = ["LineFit", "MaskSumCurve", "RateModel", "SetRateModel", "fit_line"]


class MaskSumCurve:
    """Σ log₂ m as a function of the λ index, and its inverse.

    Subclasses give :meth:`log2_mask_sum` over a batch of indices and :attr:`max_index`; the
    rest is shared, so one image (:class:`RateModel`) and a set of images coded at one λ
    (:class:`SetRateModel`) are searched alike. Each LAE evaluation costs about a hundredth of
    an encode, and rate control inverts the curve several times per image, so the values at a
    grid of :attr:`knots` indices and at every index asked for are kept.
    """

    max_index: float
    #: Indices of the cached grid over [0, max_index] that brackets a solution.
    knots: int = 11

    def log2_mask_sum(self, lmbda_idx: float | Sequence[float] | Tensor) -> np.ndarray:
        raise NotImplementedError

    def bits(self, lmbda_idx: float) -> float:
        """Σ log₂ m at one λ index (kept)."""
        cache = self.__dict__.setdefault("_bits", {})
        key = to_float32(float(lmbda_idx))
        if key not in cache:
            cache[key] = float(self.log2_mask_sum([key])[0])
        return cache[key]

    def position(self, lmbda_idx: float) -> float:
        """:meth:`bits`, as a search axis (see :mod:`.search`)."""
        return self.bits(lmbda_idx)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, Σ log₂ m) on the cached grid, computed in one batched call."""
        if "_grid" not in self.__dict__:
            knots = np.linspace(0.0, self.max_index, self.knots)
            self.__dict__["_grid"] = (knots, self.log2_mask_sum(knots))
        return self.__dict__["_grid"]

    def solve(
        self, goal_bits: float, rtol: float = 1e-7, iterations: int = 16
    ) -> tuple[float, str | None]:
        """The λ index where Σ log₂ m equals ``goal_bits``: the cached grid brackets it, the
        Illinois variant of regula falsi narrows the bracket (a few LAE calls, since the
        curve is smooth) to ``rtol`` of the curve's range.

        Σ log₂ m grows with the index for a trained LAE. A goal beyond the reachable values
        returns the index of the nearest one and ``"low"`` or ``"high"``; otherwise None.
        """
        if math.isnan(goal_bits):
            raise RateError(f"cannot solve for a rate of {goal_bits} bits")
        knots, sums = self.grid()
        if goal_bits <= sums.min():
            return float(knots[sums.argmin()]), "low"
        if goal_bits >= sums.max():  # the highest index of the largest sum (a flat curve: the end)
            return float(knots[len(sums) - 1 - sums[::-1].argmax()]), "high"
        # the first knot interval whose ends straddle the goal
        k = int(np.flatnonzero((sums[:-1] - goal_bits) * (sums[1:] - goal_bits) <= 0)[0])
        a, b = float(knots[k]), float(knots[k + 1])
        fa, fb = float(sums[k]) - goal_bits, float(sums[k + 1]) - goal_bits
        tol, side = rtol * float(sums.max() - sums.min()), 0
        for _ in range(iterations):
            c = b - fb * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
            fc = self.bits(c) - goal_bits
            if abs(fc) <= tol:
                return to_float32(c), None
            if (fc > 0) == (fb > 0):  # c replaces b; a stays: halve its value (Illinois)
                b, fb = c, fc
                fa, side = (fa / 2 if side == -1 else fa), -1
            else:
                a, fa = c, fc
                fb, side = (fb / 2 if side == 1 else fb), 1
        return to_float32(b - fb * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)), None


class RateModel(MaskSumCurve):
    """Σ log₂ m over the latent of one image, for any λ index, from one analysis pass.

    Args:
        model: a variable-rate codec with an encoder-side LAE (``model.has_rate_model``).
        x: one image, (1, 3, H, W) or (3, H, W) in [0, 1]; padded as the codec pads it.
        chunk: λ indices evaluated per LAE call (they share the latent, batched).
    """

    def __init__(self, model: LearnedCodec, x: Tensor, chunk: int = 16) -> None:
        if not model.has_rate_model:
            raise model.no_rate_model_error()
        x = x.unsqueeze(0) if x.dim() == 3 else x
        #: the model's analysis of ``x`` (g_a once); the probe asks it for the rest
        self.analysis = model.analyse(x.to(next(model.parameters()).device))
        self.num_pixels = self.analysis.num_pixels
        self.max_index = float(model.num_lmbdas - 1)
        self.chunk = chunk

    def log2_mask_sum(self, lmbda_idx: float | Sequence[float] | Tensor) -> np.ndarray:
        """Σ log₂ m (bits) at each λ index (rounded to the float32 a file stores)."""
        return self.analysis.log2_mask_sum(lmbda_idx, self.chunk).numpy()


class SetRateModel(MaskSumCurve):
    """Σ log₂ m summed over several images coded at one λ index (a byte budget for a set)."""

    def __init__(self, models: Sequence[RateModel]) -> None:
        if not models:
            raise RateError("a set of images to code needs at least one image")
        self.models = list(models)
        self.max_index = self.models[0].max_index
        self.num_pixels = sum(m.num_pixels for m in self.models)

    def log2_mask_sum(self, lmbda_idx: float | Sequence[float] | Tensor) -> np.ndarray:
        return np.sum([m.log2_mask_sum(lmbda_idx) for m in self.models], axis=0)


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
