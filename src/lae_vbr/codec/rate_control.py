"""Rate control: code an image at a target bit rate with the logarithmic R-λ model.

The file's rate is ``Σ log₂ m_λ + C`` bits (:mod:`lae_vbr.codec.rate_model`). One real encode
at a starting λ index gives C; solving ``Σ log₂ m_λ = R_target − C`` for a continuous λ index
needs only the encoder-side LAE (no entropy coding), and a second encode codes the image
there. More encodes, when allowed, correct the slope of the line from the last two (a secant
step). The rate that counts is the file's: bytes × 8 / pixels, header included.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from .container import Bitstream, to_float32
from .errors import RateError
from .image_codec import ImageCodec
from .rate_model import RateModel

if TYPE_CHECKING:
    from .refine import OnStep, RefineSchedule

__all__ = [
    "Attempt",
    "RateControlResult",
    "RateControlWarning",
    "check_target_bpp",
    "encode_to_bpp",
]


class RateControlWarning(UserWarning):
    """The target is outside what the model reaches on this image; the nearest end was coded."""


@dataclass(frozen=True)
class Attempt:
    """One real encode: where, and the file it gave."""

    lmbda_idx: float
    stream: Bitstream

    @property
    def bpp(self) -> float:
        return self.stream.bpp


@dataclass
class RateControlResult:
    """The file closest to the target among the real encodes made, and how it was found."""

    target_bpp: float
    attempts: list[Attempt] = field(default_factory=list)
    clamped: str | None = None  # "low" / "high": the target is beyond that end
    achievable: tuple[float, float] | None = None  # bpp at λ index 0 and max (predicted)
    seconds: float = 0.0

    @property
    def best(self) -> Attempt:
        return min(self.attempts, key=lambda a: abs(a.bpp - self.target_bpp))

    @property
    def stream(self) -> Bitstream:
        return self.best.stream

    @property
    def lmbda_idx(self) -> float:
        return self.best.lmbda_idx

    @property
    def bpp(self) -> float:
        return self.best.bpp

    @property
    def relative_error(self) -> float:
        """(R − R_target) / R_target of the file returned."""
        return self.bpp / self.target_bpp - 1

    @property
    def encodes(self) -> int:
        return len(self.attempts)


def check_target_bpp(target_bpp: float) -> float:
    """``target_bpp`` as a float; RateError unless it is a positive finite number."""
    value = float(target_bpp)
    if not (math.isfinite(value) and value > 0):
        raise RateError(f"the target bit rate must be a positive number of bpp, got {value:g}")
    return value


def _slope(a: tuple[float, float], b: tuple[float, float], fallback: float) -> float:
    """Secant slope dR/dS between two (S, R) points; ``fallback`` when it is unusable."""
    ds = b[0] - a[0]
    slope = (b[1] - a[1]) / ds if abs(ds) > 1e-9 else math.nan
    return slope if math.isfinite(slope) and slope > 0 else fallback


def encode_to_bpp(
    codec: ImageCodec,
    x: Tensor,
    target_bpp: float,
    *,
    max_encodes: int = 2,
    tolerance: float = 0.0,
    start: float | None = None,
    slope: float = 1.0,
    refine: RefineSchedule | None = None,
    on_encode: Callable[[int, int], None] | None = None,
    on_step: OnStep | None = None,
) -> RateControlResult:
    """Code ``x`` (1, 3, H, W) in [0, 1] as close as possible to ``target_bpp`` (whole file).

    Args:
        max_encodes: real encodes allowed (≥ 1). 2: one to measure C, one at the solved λ
            index; each further one re-fits the line's slope from the last two encodes.
        tolerance: stop early once |R − R_target| / R_target is at most this.
        start: λ index of the first encode (default: the middle of the range).
        slope: dR/dΣlog₂m of the line through the first encode: 1 is the theory; a model
            whose rate grows more slowly (low rates) can pass a calibrated value.
        refine: code every attempt with latent refinement (C is then the refined one's).
        on_encode: progress, ``on_encode(n, max_encodes)`` before the n-th real encode;
            ``on_step`` is passed to the refinement of each (see :func:`refine_latents`).

    A target beyond the model's range on this image gives the nearest end and a
    :class:`RateControlWarning` stating the range. The chosen λ index is in the file header.
    """
    target_bpp = check_target_bpp(target_bpp)
    if max_encodes < 1:
        raise ValueError(f"max_encodes must be at least 1, got {max_encodes}")
    if not (math.isfinite(slope) and slope > 0):
        raise ValueError(f"slope must be a positive number, got {slope}")
    codec.require_variable_rate("rate control")
    began = time.perf_counter()
    x = x.unsqueeze(0) if x.dim() == 3 else x
    rates = RateModel(codec.model, x)
    target_bits = target_bpp * rates.num_pixels
    encode: Callable[[float], Bitstream]
    if refine is None:

        def encode(idx: float) -> Bitstream:
            return codec.encode(x, idx)

    else:
        from .refine import refine_encode  # the optimiser code only when asked for

        def encode(idx: float) -> Bitstream:
            return refine_encode(codec, x, idx, refine, on_step=on_step)[0]

    result = RateControlResult(target_bpp)
    idx = to_float32(rates.max_index / 2 if start is None else codec.rate_index(quality=start))
    points: list[tuple[float, float]] = []  # (Σ log₂ m, file bits) of each encode
    while True:
        if on_encode is not None:
            on_encode(len(points) + 1, max_encodes)
        stream = encode(idx)
        result.attempts.append(Attempt(idx, stream))
        points.append((rates.bits(idx), 8.0 * stream.num_bytes))
        if abs(stream.bpp / target_bpp - 1) <= tolerance or len(points) == max_encodes:
            break
        # the line R = gain·S + C through the newest encode (secant gain from the last two)
        gain = slope if len(points) == 1 else _slope(points[-2], points[-1], slope)
        s_now, r_now = points[-1]
        ends = rates.log2_mask_sum([0.0, rates.max_index])
        result.achievable = tuple(  # type: ignore[assignment]
            (r_now + gain * (s - s_now)) / rates.num_pixels for s in ends
        )
        idx, result.clamped = rates.solve(s_now + (target_bits - r_now) / gain)
        if any(attempt.lmbda_idx == idx for attempt in result.attempts):
            break
    result.seconds = time.perf_counter() - began
    if result.clamped:
        _check_clamp(result, idx)
    return result


def _check_clamp(result: RateControlResult, end_idx: float) -> None:
    """Warn when the coded end really misses the target; a clamp the prediction alone
    implied (the real rate there passes the target) is dropped."""
    end = next(a for a in result.attempts if a.lmbda_idx == end_idx)
    low = result.clamped == "low"
    if (end.bpp <= result.target_bpp) if low else (end.bpp >= result.target_bpp):
        result.clamped = None
        return
    lo, hi = result.achievable or (math.nan, math.nan)
    lo, hi = (end.bpp, hi) if low else (lo, end.bpp)  # the coded end's real rate
    lo, hi = min(lo, hi), max(lo, hi)
    warnings.warn(
        f"target {result.target_bpp:.4g} bpp is {'below' if low else 'above'} what the model "
        f"reaches on this image (about {lo:.4g}–{hi:.4g} bpp); coded at the "
        f"{'lowest' if low else 'highest'} rate, λ index {end.lmbda_idx:g}: {end.bpp:.4f} bpp",
        RateControlWarning,
        stacklevel=3,
    )
