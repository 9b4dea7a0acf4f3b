"""The rate-control methods the rate-control study compares, under one signature.

Each method takes (codec, image, target bpp) and returns the
:class:`~lae_vbr.codec.rate_control.RateControlResult` of the encodes it made, so the study
measures them all alike. Ours is :func:`~lae_vbr.codec.rate_control.encode_to_bpp` (``estimate``,
and the paper's pure R-λ model ``rlambda`` with its variants); the baselines are here: one
content-agnostic R(λ) curve from calibration images (:class:`Calibration`), a per-image
hyperbolic model R = α·λ^β (:func:`hyperbolic`), and bisection with real encodes
(:func:`bisection`, the accuracy ceiling and its cost). For a target PSNR the ceiling is
:func:`psnr_bisection` (a real encode and decode per round).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from lae_vbr.codec.container import to_float32
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.probe import psnr_8bit
from lae_vbr.codec.quality_control import QualityResult
from lae_vbr.codec.rate_control import Attempt, RateControlResult, encode_to_bpp
from lae_vbr.codec.rate_model import RateModel, fit_line
from lae_vbr.models.rate import index_of_value as lmbda_to_index
from lae_vbr.models.rate import value_of_index as index_to_lmbda

from .common import StudyError

__all__ = [
    "CALIBRATED",
    "METHODS",
    "Calibration",
    "Method",
    "bisection",
    "check_methods",
    "hyperbolic",
    "psnr_bisection",
    "rate_control_methods",
    "single_encode",
]

#: Every method the study knows, in table order.
METHODS = (
    "estimate",
    "rlambda",
    "rlambda_global_start",
    "rlambda_calibrated",
    "rlambda_3",
    "global",
    "hyperbolic",
    "bisection",
)
#: The methods that need a :class:`Calibration`.
CALIBRATED = frozenset({"global", "rlambda_global_start", "rlambda_calibrated"})

Method = Callable[[ImageCodec, Tensor, float], RateControlResult]


@dataclass(frozen=True)
class Calibration:
    """What a model does on average, from calibration images coded over a λ grid: the mean
    bpp per λ index (the global curve, inverted by log-linear interpolation) and the median
    slope of real bits against Σ log₂ m (for ``ours_calibrated``)."""

    indices: np.ndarray
    bpp: np.ndarray
    slope: float

    @classmethod
    def measure(
        cls, codec: ImageCodec, images: Sequence[Tensor], grid: Sequence[float]
    ) -> Calibration:
        """Code each image (1, 3, H, W) at every λ index of ``grid``."""
        rates, slopes = [], []
        for x in images:
            bits = [8.0 * codec.encode(x, idx).num_bytes for idx in grid]
            s_bits = RateModel(codec.model, x).log2_mask_sum(grid)
            slopes.append(fit_line(s_bits, bits, slope=None).slope)
            rates.append(np.asarray(bits) / (x.shape[-2] * x.shape[-1]))
        return cls(np.asarray(grid, float), np.mean(rates, axis=0), float(np.median(slopes)))

    def index_for(self, target_bpp: float) -> float:
        """λ index whose mean rate is ``target_bpp`` (clamped to the grid's ends)."""
        order = np.argsort(self.bpp)  # np.interp needs increasing x
        logs = np.log(self.bpp[order])
        idx = np.interp(math.log(target_bpp), logs, self.indices[order])
        return to_float32(float(idx))


def single_encode(codec: ImageCodec, x: Tensor, target: float, idx: float) -> RateControlResult:
    """One encode at a λ index chosen beforehand (the global curve's)."""
    began = time.perf_counter()
    result = RateControlResult(target, [Attempt(to_float32(idx), codec.encode(x, idx))])
    result.seconds = time.perf_counter() - began
    return result


def hyperbolic(
    codec: ImageCodec, x: Tensor, target: float, fit_at: Sequence[float] = (1.0, 4.0)
) -> RateControlResult:
    """R = α·λ^β through two encodes at ``fit_at`` λ indices, solved for λ, then encoded."""
    began = time.perf_counter()
    result = RateControlResult(target)
    for idx in fit_at:
        result.attempts.append(Attempt(to_float32(idx), codec.encode(x, idx)))
    (la, ra), (lb, rb) = (
        (index_to_lmbda(codec.lmbdas, a.lmbda_idx), a.bpp) for a in result.attempts
    )
    beta = math.log(rb / ra) / math.log(lb / la)
    lmbda = math.exp(math.log(la) + math.log(target / ra) / beta) if beta > 0 else la
    lmbda = min(max(lmbda, min(codec.lmbdas)), max(codec.lmbdas))
    idx = to_float32(lmbda_to_index(codec.lmbdas, lmbda))
    if all(a.lmbda_idx != idx for a in result.attempts):
        result.attempts.append(Attempt(idx, codec.encode(x, idx)))
    result.seconds = time.perf_counter() - began
    return result


def bisection(
    codec: ImageCodec, x: Tensor, target: float, tolerance: float = 0.005, max_encodes: int = 12
) -> RateControlResult:
    """Bisection on the λ index with a real encode per step (rate grows with the index)."""
    began = time.perf_counter()
    result = RateControlResult(target)
    lo, hi = 0.0, float(codec.max_index)
    for _ in range(max_encodes):
        idx = to_float32(0.5 * (lo + hi))
        stream = codec.encode(x, idx)
        result.attempts.append(Attempt(idx, stream))
        if abs(stream.bpp / target - 1) <= tolerance:
            break
        lo, hi = (idx, hi) if stream.bpp < target else (lo, idx)
    result.seconds = time.perf_counter() - began
    return result


def psnr_bisection(
    codec: ImageCodec, x: Tensor, target: float, tolerance: float = 0.05, rounds: int = 8
) -> QualityResult:
    """Bisection on the λ index with a real encode and decode per round until the PSNR is
    within ``tolerance`` dB (PSNR grows with the index); the closest file is kept."""
    began = time.perf_counter()
    result = QualityResult(target, measured=True)
    lo, hi, best = 0.0, float(codec.max_index), math.inf
    for _ in range(rounds):
        idx = to_float32(0.5 * (lo + hi))
        stream = codec.encode(x, idx)
        psnr = psnr_8bit(x, codec.decode(stream))
        result.rounds.append((idx, psnr))
        result.encodes += 1
        if abs(psnr - target) < best:
            best, result.stream, result.psnr = abs(psnr - target), stream, psnr
        if abs(psnr - target) <= tolerance:
            break
        lo, hi = (idx, hi) if psnr < target else (lo, idx)
    result.seconds = time.perf_counter() - began
    return result


def check_methods(names: Sequence[str]) -> None:
    """StudyError naming the unknown ones, before anything is loaded."""
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise StudyError(f"unknown rate-control methods {unknown} (choose from {list(METHODS)})")


def rate_control_methods(
    names: Sequence[str],
    calibration: Calibration | None = None,
    fit_at: Sequence[float] = (1.0, 4.0),
    tolerance: float = 0.005,
    max_encodes: int = 12,
) -> dict[str, Method]:
    """The methods ``names`` (in that order) as :data:`Method` callables; ``calibration`` is
    needed by ``global``, ``rlambda_global_start`` and ``rlambda_calibrated``."""
    check_methods(names)
    if calibration is None and CALIBRATED & set(names):
        raise StudyError(f"methods {sorted(CALIBRATED & set(names))} need a calibration")
    fit_at = tuple(float(v) for v in fit_at)
    table: dict[str, Method] = {
        "estimate": lambda c, x, t: encode_to_bpp(c, x, t),
        "rlambda": lambda c, x, t: encode_to_bpp(c, x, t, method="rlambda"),
        "rlambda_3": lambda c, x, t: encode_to_bpp(c, x, t, method="rlambda", max_encodes=3),
        "hyperbolic": lambda c, x, t: hyperbolic(c, x, t, fit_at),
        "bisection": lambda c, x, t: bisection(c, x, t, float(tolerance), int(max_encodes)),
    }
    if calibration is not None:
        curve = calibration
        table["global"] = lambda c, x, t: single_encode(c, x, t, curve.index_for(t))
        table["rlambda_global_start"] = lambda c, x, t: encode_to_bpp(
            c, x, t, method="rlambda", start=curve.index_for(t)
        )
        table["rlambda_calibrated"] = lambda c, x, t: encode_to_bpp(
            c, x, t, method="rlambda", slope=curve.slope
        )
    return {m: table[m] for m in names}
