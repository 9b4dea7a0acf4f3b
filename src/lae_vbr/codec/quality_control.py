"""Quality control: code an image at a target PSNR, with at most three reconstructions.

The D-λ model beside the R-λ one (measured in ``experiments/dlambda``): over the λ range an
image's PSNR is close to a straight line in Σ log₂ m of the encoder-side LAE mask, but its
slope differs from image to image (on the demo model by a factor of four, and far below the
6.02 dB per bit of mean log₂ m that a uniform quantiser scaled by m would give), so a prior
slope is a poor guess and the line has to be measured on the image. A *round* is the image the
decoder will return at one λ index, computed without entropy coding
(:meth:`~.probe.ImageProbe.reconstruct`: the same quantised latent through the decoder-side
LAE and ``g_s``), so it costs a decode and gives that index's PSNR exactly.

``method="interpolate"`` (the default): round 1 at the middle λ index (or ``start``), round 2
at the end of the range on the target's side, then the target is solved on the line through
the two and the image is encoded there (one real encode; its PSNR is the line's prediction,
which the study checks against real decodes). ``method="secant"``: round 2 where the line
through round 1 with the prior ``slope`` puts the target, then the line through both rounds.
Round 3 (the default's last) lies where the line through the first two puts the target
(regula falsi), so the final line runs through the two rounds nearest it: on the previous
bundled model's unseen photos the error fell from 0.136 / 0.341 dB (mean / max, two rounds) to
0.029 / 0.103 dB, for 5.6× a plain encode's CPU time instead of 4.1×; on the current one
three rounds give 0.025 / 0.215 dB (``experiments/rate_control``). A target beyond the range
is coded at the end with a :class:`RateControlWarning` stating the range.

The rounds are placed on Σ log₂ m (free to evaluate), but the final line runs through them in
the log of the estimated file size (:meth:`~.probe.ImageProbe.estimate_bits`, about a seventh
of an encode each): PSNR bends less against log rate than against Σ log₂ m over a wide λ range
(the two-round error of ``study=dlambda``), so the target is solved for a rate and that rate
found with a few estimates (:func:`~.search.search_estimates`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

from torch import Tensor

from .container import Bitstream, to_float32
from .errors import RateError
from .image_codec import ImageCodec
from .probe import ImageProbe
from .rate_control import RateControlWarning
from .search import IndexAxis, Point, next_position, search_estimates
from .targets import TargetError, check_positive

__all__ = ["QUALITY_METHODS", "THEORY_DB_PER_BIT", "QualityResult", "encode_to_psnr"]

#: The quality-control methods (see the module).
QUALITY_METHODS = ("interpolate", "secant")
#: dB of PSNR per bit of mean log₂ m if a uniform quantiser's error shrank as 1/m²:
#: 20·log10(2). The prior of ``secant`` when no slope is given.
THEORY_DB_PER_BIT = 20 * math.log10(2)
#: The final search for the rate the line asks for: relative tolerance (at about 4 dB per e×
#: of rate, 0.1 % is 0.004 dB) and most rate estimates it may add.
RATE_RTOL = 1e-3
RATE_PROBES = 4


@dataclass
class QualityResult:
    """The file coded for a target PSNR and how it was found."""

    target_psnr: float
    stream: Bitstream | None = None
    psnr: float = math.nan  # of the file: measured when a round was at its index, else predicted
    measured: bool = False
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (λ index, PSNR)
    clamped: str | None = None
    achievable: tuple[float, float] | None = None  # PSNR at λ index 0 and max (≈)
    seconds: float = 0.0
    encodes: int = 0

    @property
    def lmbda_idx(self) -> float:
        assert self.stream is not None and self.stream.lmbda_idx is not None
        return self.stream.lmbda_idx

    @property
    def bpp(self) -> float:
        assert self.stream is not None
        return self.stream.bpp

    @property
    def error(self) -> float:
        """PSNR − target (dB) of the file, as known (measured or predicted)."""
        return self.psnr - self.target_psnr


def check_target_psnr(target: float) -> float:
    """``target`` as a float; RateError unless it is a positive finite number of dB."""
    try:
        return check_positive(target, "the target PSNR", "dB")
    except TargetError as err:
        raise RateError(str(err)) from None


@dataclass
class _Rounds:
    """The reconstructions made so far, as points of the D-λ line."""

    probe: ImageProbe
    target: float
    points: list[Point] = field(default_factory=list)

    def measure(self, idx: float) -> float:
        psnr = self.probe.psnr(idx)
        self.points.append((idx, self.probe.rates.bits(idx), psnr))
        return psnr

    def close(self, tolerance: float) -> Point | None:
        best = min(self.points, key=lambda p: abs(p[2] - self.target))
        return best if abs(best[2] - self.target) <= tolerance else None

    def nearest(self) -> tuple[Point, Point]:
        """The two rounds nearest the target (two rounds at least)."""
        first, second = sorted(self.points, key=lambda p: abs(p[2] - self.target))[:2]
        return first, second

    def log_rate(self, idx: float) -> float:
        return math.log(self.probe.estimate_bits(idx))

    def rate_line(self) -> tuple[Point, Point]:
        """The two rounds nearest the target as (λ index, log of the estimated rate, PSNR):
        the line that predicts and solves."""
        (i0, _, v0), (i1, _, v1) = self.nearest()
        return (i0, self.log_rate(i0), v0), (i1, self.log_rate(i1), v1)

    def line_at(self, idx: float) -> float:
        """The PSNR at this index by the line through the two rounds nearest the target, in
        the log of the estimated rate."""
        (_, l0, v0), (_, l1, v1) = self.rate_line()
        return v0 + (v1 - v0) * (self.log_rate(idx) - l0) / (l1 - l0) if l1 != l0 else v0

    def solve_on_rate(self, start: tuple[float, str | None]) -> tuple[float, str | None]:
        """The index whose estimated rate the log-rate line through the two nearest rounds
        gives the target, searched by estimates from ``start`` (the Σ log₂ m line's answer,
        kept when the rounds give no usable line), and ``"low"``/``"high"`` when it lies
        beyond that end of the range."""
        (i0, l0, v0), (i1, l1, v1) = self.rate_line()
        if v1 == v0 or i1 == i0:
            return start
        goal = math.exp(l0 + (self.target - v0) * (l1 - l0) / (v1 - v0))
        known = {i0: math.exp(l0), i1: math.exp(l1)}
        prior = (known[i1] - known[i0]) / (i1 - i0)
        if not prior > 0:
            return start
        axis = IndexAxis(self.probe.rates.max_index)
        bits = self.probe.estimate_bits
        return search_estimates(axis, bits, goal, known, start[0], RATE_RTOL, prior, RATE_PROBES)


def _next_index(state: _Rounds, method: str, prior: float) -> float:
    """The λ index of the next round: after one round, the end on the target's side
    (``interpolate``) or the prior line's solution (``secant``); then regula falsi."""
    curve = state.probe.rates
    if len(state.points) == 1 and method == "interpolate":
        return curve.max_index if state.target > state.points[0][2] else 0.0
    return curve.solve(next_position(state.points, state.target, prior))[0]


def _final_index(state: _Rounds, prior: float) -> tuple[float, str | None]:
    """Where to encode: on the line through the rounds, in log rate once there are two
    (interpolated when they bracket the target), or the end the target lies beyond
    (``"low"``/``"high"``)."""
    curve, target = state.probe.rates, state.target
    idx, _, psnr = min(state.points, key=lambda p: abs(p[2] - target))
    if idx == 0.0 and psnr > target and not any(p[2] < target for p in state.points):
        return idx, "low"
    if idx == curve.max_index and psnr < target and not any(p[2] > target for p in state.points):
        return idx, "high"
    on_mask_line = curve.solve(next_position(state.points, target, prior))
    return on_mask_line if len(state.points) < 2 else state.solve_on_rate(on_mask_line)


def _predicted(state: _Rounds, idx: float) -> tuple[float, bool]:
    """(PSNR at ``idx``, measured?): a round's value, else the line's."""
    for i, _, psnr in state.points:
        if i == idx:
            return psnr, True
    if len(state.points) < 2:
        return state.points[0][2], False
    return state.line_at(idx), False


def encode_to_psnr(
    codec: ImageCodec,
    x: Tensor,
    target_psnr: float,
    *,
    method: str = "interpolate",
    rounds: int = 3,
    tolerance: float = 0.02,
    start: float | None = None,
    slope: float | None = None,
) -> QualityResult:
    """Code ``x`` (1, 3, H, W) in [0, 1] at a PSNR (dB, 8-bit, as the decoded PNG) as close
    as possible to ``target_psnr``: ``rounds`` reconstructions (see the module), then one
    real encode, at a round's index when one came within ``tolerance`` dB.

    ``slope``: the prior dB per bit of mean log₂ m for ``secant`` (default 6.02, the
    theory); ``start``: the λ index of round 1 (default the middle).
    """
    target = check_target_psnr(target_psnr)
    if method not in QUALITY_METHODS:
        raise ValueError(f"unknown quality-control method {method!r}; use {QUALITY_METHODS}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    began = time.perf_counter()
    state = _Rounds(ImageProbe(codec, x), target)
    prior = (slope or THEORY_DB_PER_BIT) / state.probe.num_latent_elements  # dB per bit of S
    idx = to_float32(codec.max_index / 2 if start is None else codec.rate_index(quality=start))
    for _ in range(rounds):
        state.measure(idx)
        if state.close(tolerance) or len(state.points) == rounds:
            break
        idx = _next_index(state, method, prior)
        if any(p[0] == idx for p in state.points):
            break
    result = _finish(state, prior, tolerance)
    result.seconds = time.perf_counter() - began
    return result


def _finish(state: _Rounds, prior: float, tolerance: float) -> QualityResult:
    """Encode where the rounds point, record what is known, warn if the target is out of
    reach."""
    near = state.close(tolerance)
    idx, clamped = (near[0], None) if near else _final_index(state, prior)
    result = QualityResult(state.target, state.probe.encode(idx), encodes=1, clamped=clamped)
    result.psnr, result.measured = _predicted(state, idx)
    result.rounds = [(p[0], p[2]) for p in state.points]
    ends = (0.0, state.probe.rates.max_index)
    result.achievable = tuple(_predicted(state, i)[0] for i in ends)  # type: ignore[assignment]
    if clamped is not None:
        lo, hi = sorted(result.achievable)
        low = clamped == "low"
        warnings.warn(
            f"target {state.target:.4g} dB is {'below' if low else 'above'} what the model "
            f"reaches on this image (about {lo:.4g}–{hi:.4g} dB); coded at the "
            f"{'lowest' if low else 'highest'} quality, λ index {idx:g}: {result.psnr:.2f} dB",
            RateControlWarning,
            stacklevel=3,
        )
    return result
