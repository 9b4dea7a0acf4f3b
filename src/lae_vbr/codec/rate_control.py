"""Rate control: code an image at a target bit rate or within a file size, a set of images
within a total size, with as few real encodes as possible.

Two methods, chosen by ``method=``:

* ``"estimate"`` (the default): the file's length predicted without coding (each symbol
  priced with the coder's own tables; :class:`~.probe.ImageProbe`) is searched from the
  logarithmic R-λ line ``R = a·Σ log₂ m_λ + C`` (its first step), then by regula falsi on the
  λ index; an estimate costs a fraction of an encode since ``g_a`` runs once. A real encode
  codes the image where the estimate meets the target, which it predicts to a few bytes; if
  the file still misses by more than ``tolerance`` (refined latents), the ratio file /
  estimate it measured rescales the estimates and a second encode finishes.
* ``"rlambda"``: the paper's R-λ model alone. One real encode at the middle λ index gives C,
  ``Σ log₂ m_λ = R_target − C`` is solved for a continuous λ index with the LAE alone, a second
  encode codes the image there; more encodes, when allowed, re-fit the slope (secant).

The rate that counts is the file's: bytes × 8 / pixels, header included. A target beyond what
the model reaches on the image is coded at the nearest end with a :class:`RateControlWarning`
stating the reachable range. A size is a budget: the file returned is the largest one made
that fits, and more encodes are made in the rare case none of the first ones fit.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from .container import Bitstream, to_float32
from .errors import RateError
from .image_codec import ImageCodec
from .probe import ImageProbe, ProbeSet, StreamSet
from .rate_model import MaskSumCurve
from .regions import Region
from .search import IndexAxis, search_estimates
from .targets import TargetError, check_positive, parse_size

if TYPE_CHECKING:
    from .refine import OnStep, RefineSchedule

__all__ = [
    "METHODS",
    "Attempt",
    "RateControlResult",
    "RateControlWarning",
    "check_target_bpp",
    "check_target_size",
    "encode_set_to_size",
    "encode_to_bpp",
    "encode_to_size",
]

#: The rate-control methods (see the module).
METHODS = ("estimate", "rlambda")
#: Extra real encodes a size budget may take when none of the first ones fits.
_EXTRA_FOR_BUDGET = 4
#: New estimates of the first search after its first two (the middle, the R-λ step), at
#: most; later searches make up to 2.
_PROBES = 5


class RateControlWarning(UserWarning):
    """The target is outside what the model reaches on this image; the nearest end was coded."""


@dataclass(frozen=True)
class Attempt:
    """One real encode: where, and the file (or files, for a set) it gave."""

    lmbda_idx: float
    stream: Bitstream | StreamSet

    @property
    def bpp(self) -> float:
        return self.stream.bpp

    @property
    def num_bytes(self) -> int:
        return self.stream.num_bytes


@dataclass
class RateControlResult:
    """The file kept among the real encodes made, and how it was found.

    For a bit rate the file kept is the one closest to the target; for a size budget
    (``max_bytes``), the largest one that fits, or the smallest made when none does.
    """

    target_bpp: float
    attempts: list[Attempt] = field(default_factory=list)
    clamped: str | None = None  # "low" / "high": the target is beyond that end
    achievable: tuple[float, float] | None = None  # bpp at λ index 0 and max (predicted)
    seconds: float = 0.0
    max_bytes: int | None = None
    estimates: int = 0  # rate estimates (no entropy coding) made by the search
    method: str = ""  # "estimate" or "rlambda" (empty for the study's baselines)

    @property
    def best(self) -> Attempt:
        if self.max_bytes is None:
            return min(self.attempts, key=lambda a: abs(a.bpp - self.target_bpp))
        fitting = [a for a in self.attempts if a.num_bytes <= self.max_bytes]
        if fitting:
            return max(fitting, key=lambda a: a.num_bytes)
        return min(self.attempts, key=lambda a: a.num_bytes)

    @property
    def stream(self) -> Bitstream | StreamSet:
        return self.best.stream

    @property
    def lmbda_idx(self) -> float:
        return self.best.lmbda_idx

    @property
    def bpp(self) -> float:
        return self.best.bpp

    @property
    def num_bytes(self) -> int:
        return self.best.num_bytes

    @property
    def relative_error(self) -> float:
        """(R − R_target) / R_target of the file returned (for a budget, ≤ 0 when it fits)."""
        return self.bpp / self.target_bpp - 1

    @property
    def encodes(self) -> int:
        return len(self.attempts)


def check_target_bpp(target_bpp: float) -> float:
    """``target_bpp`` as a float; RateError unless it is a positive finite number."""
    try:
        return check_positive(target_bpp, "the target bit rate", "bpp")
    except TargetError as err:
        raise RateError(str(err)) from None


def check_target_size(size: int | float | str) -> int:
    """A size in bytes from a number or text with a k/M/Ki/Mi suffix (see :mod:`.targets`);
    RateError unless it is at least one byte."""
    try:
        return parse_size(size)
    except TargetError as err:
        raise RateError(str(err)) from None


# -- the R-λ line and the searches along it ------------------------------------------------
@dataclass
class _Line:
    """The R-λ line ``value = gain·S + C`` (S = Σ log₂ m) through the newest measured point,
    with the secant slope of the two newest points (the prior while there is one)."""

    curve: MaskSumCurve
    prior: float
    points: list[tuple[float, float, float]] = field(default_factory=list)  # (idx, S, value)

    def add(self, idx: float, value: float) -> None:
        self.points.append((idx, self.curve.bits(idx), value))

    def gain(self) -> float:
        if len(self.points) < 2:
            return self.prior
        (_, s0, v0), (_, s1, v1) = self.points[-2:]
        slope = (v1 - v0) / (s1 - s0) if abs(s1 - s0) > 1e-9 else math.nan
        return slope if math.isfinite(slope) and slope > 0 else self.prior

    def predict(self, s_bits: float) -> float:
        _, s_now, v_now = self.points[-1]
        return v_now + self.gain() * (s_bits - s_now)

    def solve(self, goal: float) -> tuple[float, str | None]:
        """The λ index where the line reaches ``goal`` (clamped to the range, see
        :meth:`MaskSumCurve.solve`)."""
        _, s_now, v_now = self.points[-1]
        return self.curve.solve(s_now + (goal - v_now) / self.gain())

    def visited(self, idx: float) -> bool:
        return any(p[0] == idx for p in self.points)


class _Coder(Protocol):
    """What the control needs: the curve of Σ log₂ m, rate estimates and real encodes."""

    rates: MaskSumCurve
    num_pixels: int
    estimates: int

    def estimate_bits(self, lmbda_idx: float) -> float: ...


@dataclass(frozen=True)
class _Goal:
    """Where the control aims (bits) and when a real file is good enough."""

    bits: float
    tolerance: float
    cap_bits: float | None = None

    def aim(self, misses: int) -> float:
        """The estimate to aim at: the target, or for a budget the middle of the accepted
        band below it, lower after each file that did not fit."""
        if self.cap_bits is None:
            return self.bits
        return self.cap_bits * (1 - 0.5 * self.tolerance * 2**misses)

    def accepts(self, bits: float) -> bool:
        if self.cap_bits is None:
            return abs(bits / self.bits - 1) <= self.tolerance
        return self.cap_bits * (1 - self.tolerance) <= bits <= self.cap_bits

    def fits(self, bits: float) -> bool:
        return self.cap_bits is None or bits <= self.cap_bits

    def search_rtol(self) -> float:
        """How close an estimate must come to the aim for its file to be accepted: the
        estimates price the file to a few bytes, so nine tenths of the tolerance about a bit
        rate, and of half of it about the middle of a budget's band."""
        band = self.tolerance if self.cap_bits is None else self.tolerance / 2
        return max(0.9 * band, 1e-4)


# -- the two methods -----------------------------------------------------------------------
Encode = Callable[[float], "Bitstream | StreamSet"]
OnEncode = Callable[[int, int], None]


@dataclass
class _Run:
    """One rate-control run: what codes, where it aims, and the limits."""

    coder: _Coder
    encode: Encode
    goal: _Goal
    start: float
    slope: float
    max_encodes: int
    on_encode: OnEncode | None = None

    def code(self, result: RateControlResult, idx: float) -> float:
        """A real encode at ``idx``, recorded; its file's bits."""
        if self.on_encode is not None:
            self.on_encode(len(result.attempts) + 1, self.max_encodes)
        stream = self.encode(idx)
        result.attempts.append(Attempt(idx, stream))
        return 8.0 * stream.num_bytes

    def limit(self, result: RateControlResult) -> bool:
        """Whether the encodes are spent: ``max_encodes``, or for a budget that no file fits
        yet, a few more."""
        n = len(result.attempts)
        if n < self.max_encodes:
            return False
        fits = any(self.goal.fits(8.0 * a.num_bytes) for a in result.attempts)
        return fits or n >= self.max_encodes + _EXTRA_FOR_BUDGET


def _rlambda_step(
    run: _Run, estimate: Callable[[float], float], idx: float, aim: float, rtol: float
) -> float:
    """The first estimate, at ``idx``; unless it is within ``rtol`` of ``aim``, the index
    where the R-λ line through it (C = estimate − slope·Σ log₂ m) meets the aim."""
    value = estimate(idx)
    if abs(value / aim - 1) <= rtol:
        return idx
    s_now = run.coder.rates.bits(idx)
    return run.coder.rates.solve(s_now + (aim - value) / run.slope)[0]


def _index_slope(run: _Run) -> float:
    """The R-λ line's slope per unit of λ index, averaged over the range: the fallback step
    of a search on the index while two estimates give no usable slope."""
    knots, sums = run.coder.rates.grid()
    return run.slope * float(sums[-1] - sums[0]) / float(knots[-1] - knots[0])


def _estimate_method(run: _Run, result: RateControlResult) -> str | None:
    """Search the estimates, encode, rescale every estimate by the file / estimate ratio
    measured there, search again (the estimates already made still count), encode; returns
    whether the target lies beyond an end of the range."""
    ratio, idx, misses, clamped = 1.0, run.start, 0, None
    # the estimates price symbols with the coder's own tables, so they give the file's length
    # to a few bytes: one file usually ends it; a second corrects by the ratio file /
    # estimate measured (refined latents, float32 scales that pick another table than the
    # coder's float64 ones)
    rtol = run.goal.search_rtol()
    raw: dict[float, float] = {}  # every estimate made: index → bits

    def estimate(i: float) -> float:
        raw[i] = run.coder.estimate_bits(i)
        return ratio * raw[i]

    axis, prior = IndexAxis(run.coder.rates.max_index), _index_slope(run)
    while not run.limit(result):
        aim = run.goal.aim(misses)
        if not raw:
            idx = _rlambda_step(run, estimate, idx, aim, rtol)
        known = {i: ratio * v for i, v in raw.items()}
        # up to _PROBES estimates (two after a file) tighten the bracket, then the line
        # through the nearest two is trusted (the file measures it)
        probes = 2 if result.attempts else _PROBES
        idx, clamped = search_estimates(
            axis, estimate, aim, known, idx, rtol, prior, probes, trust_line=True
        )
        if any(a.lmbda_idx == idx for a in result.attempts):
            break  # the search lands where a file exists: nothing new to try
        bits = run.code(result, idx)
        misses += not run.goal.fits(bits)
        beyond = clamped is not None and (bits > aim if clamped == "low" else bits < aim)
        if run.goal.accepts(bits) or beyond or run.limit(result):
            break
        ratio = 1.0  # the file against its (unscaled) estimate, estimated if need be
        ratio = bits / estimate(idx)
    if clamped is not None:
        result.achievable = tuple(  # type: ignore[assignment]
            estimate(i) / run.coder.num_pixels for i in (0.0, run.coder.rates.max_index)
        )
    result.estimates = run.coder.estimates
    return clamped


def _rlambda_method(run: _Run, result: RateControlResult) -> str | None:
    """The paper's R-λ model: real encodes only, the line through the newest one (slope
    ``run.slope``, then secant), solved with the LAE alone."""
    line = _Line(run.coder.rates, run.slope)
    idx, clamped, misses = to_float32(run.start), None, 0
    while True:
        bits = run.code(result, idx)
        line.add(idx, bits)
        misses += not run.goal.fits(bits)
        if run.goal.accepts(bits) or run.limit(result):
            break
        idx, clamped = line.solve(run.goal.aim(misses))
        if line.visited(idx):
            break
        ends = run.coder.rates.log2_mask_sum([0.0, run.coder.rates.max_index])
        result.achievable = tuple(line.predict(s) / run.coder.num_pixels for s in ends)  # type: ignore[assignment]
    return clamped


_METHOD_RUNNERS = {"estimate": _estimate_method, "rlambda": _rlambda_method}
#: Default ``tolerance`` per method and target kind: a bit rate is met when the file is this
#: close (relative); a budget is met when the file is at most this far below it.
_TOLERANCE = {("estimate", "bpp"): 0.002, ("rlambda", "bpp"): 0.0, ("estimate", "size"): 0.003,
              ("rlambda", "size"): 0.003}  # fmt: skip


def _control(
    run: _Run, method: str, target_bpp: float, max_bytes: int | None, began: float
) -> RateControlResult:
    """Run ``method``, time it from ``began`` (before the analysis pass, which counts), and
    warn when the target lies beyond the range."""
    result = RateControlResult(target_bpp, max_bytes=max_bytes, method=method)
    clamped = _METHOD_RUNNERS[method](run, result)
    result.seconds = time.perf_counter() - began
    if clamped is not None:
        _check_clamp(result, clamped, run.coder.rates.max_index)
    return result


def _check_clamp(result: RateControlResult, clamped: str, max_index: float) -> None:
    """Warn when the coded end really misses the target; a clamp the prediction alone
    implied (the real rate there passes the target) is dropped."""
    end = result.best
    low = clamped == "low"
    if (end.bpp <= result.target_bpp) if low else (end.bpp >= result.target_bpp):
        return
    if end.lmbda_idx not in (0.0, max_index):  # the file kept is not at an end
        return
    result.clamped = clamped
    lo, hi = result.achievable or (math.nan, math.nan)
    lo, hi = (end.bpp, hi) if low else (lo, end.bpp)  # the coded end's real rate
    lo, hi = min(lo, hi), max(lo, hi)
    what = f"{result.target_bpp:.4g} bpp"
    images = "these images" if isinstance(end.stream, StreamSet) else "this image"
    if result.max_bytes is not None:
        what = f"{result.max_bytes} bytes ({what})"
    warnings.warn(
        f"target {what} is {'below' if low else 'above'} what the model reaches on {images} "
        f"(about {lo:.4g}–{hi:.4g} bpp); coded at the {'lowest' if low else 'highest'} "
        f"rate, λ index {end.lmbda_idx:g}: {end.bpp:.4f} bpp",
        RateControlWarning,
        stacklevel=4,
    )


# -- the entry points ----------------------------------------------------------------------
def _check_options(method: str, max_encodes: int, slope: float) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown rate-control method {method!r}; use one of {list(METHODS)}")
    if max_encodes < 1:
        raise ValueError(f"max_encodes must be at least 1, got {max_encodes}")
    if not (math.isfinite(slope) and slope > 0):
        raise ValueError(f"slope must be a positive number, got {slope}")


def _setup(
    codec: ImageCodec, method: str, kind: str, options: dict
) -> tuple[float, float, int, float]:
    """(tolerance, start index, max_encodes, slope) from the keyword options, checked."""
    max_encodes, slope = int(options.get("max_encodes", 2)), float(options.get("slope", 1.0))
    _check_options(method, max_encodes, slope)
    tolerance = options.get("tolerance")
    tolerance = _TOLERANCE[method, kind] if tolerance is None else float(tolerance)
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    start = options.get("start")
    begin = codec.max_index / 2 if start is None else codec.rate_index(quality=start)
    return tolerance, to_float32(begin), max_encodes, slope


def _image_encoder(
    codec: ImageCodec, probe: ImageProbe, refine: RefineSchedule | None, on_step: OnStep | None
) -> Encode:
    """Real encodes of the probe's image: plain (reusing its analysis) or refined."""
    if refine is None:
        return probe.encode
    from .refine import refine_encode  # the optimiser code only when asked for

    return lambda idx: refine_encode(
        codec, probe.x, idx, refine, on_step=on_step, analysis=probe.analysis
    )[0]


def _image_probe(
    codec: ImageCodec, x: Tensor, refine: RefineSchedule | None, region: Region | None
) -> ImageProbe:
    if region is not None and refine is not None:
        raise RateError("latent refinement does not take a region of interest; drop one")
    return ImageProbe(codec, x, region=region)


def encode_to_bpp(
    codec: ImageCodec,
    x: Tensor,
    target_bpp: float,
    *,
    method: str = "estimate",
    refine: RefineSchedule | None = None,
    on_encode: OnEncode | None = None,
    on_step: OnStep | None = None,
    region: Region | None = None,
    **options: float | None,
) -> RateControlResult:
    """Code ``x`` (1, 3, H, W) in [0, 1] as close as possible to ``target_bpp`` (whole file).

    Args:
        method: ``"estimate"`` or ``"rlambda"`` (the paper's; see the module).
        refine: code every real encode with latent refinement (the estimates are of the
            unrefined latent; the measured ratio file / estimate absorbs the difference).
        on_encode: progress, ``on_encode(n, max_encodes)`` before the n-th real encode;
            ``on_step`` is passed to the refinement of each (see :func:`refine_latents`).
        region: a region of interest (:class:`~.probe.ImageProbe`): the search moves the
            background's λ index, each file holds the quality map ``region(index)``.
        **options: ``max_encodes`` (default 2), ``tolerance`` (stop once the file is this
            close, relative; default 0.002 for ``estimate``, 0 for ``rlambda``: use every
            encode), ``start`` (λ index of the first encode or estimate; default the middle),
            ``slope`` (prior dR/dΣlog₂m of the line, 1 in theory).

    The chosen λ index is in the file header.
    """
    target = check_target_bpp(target_bpp)
    tolerance, start, max_encodes, slope = _setup(codec, method, "bpp", options)
    began = time.perf_counter()
    probe = _image_probe(codec, x, refine, region)
    goal = _Goal(target * probe.num_pixels, tolerance)
    encode = _image_encoder(codec, probe, refine, on_step)
    run = _Run(probe, encode, goal, start, slope, max_encodes, on_encode)
    return _control(run, method, target, None, began)


def encode_to_size(
    codec: ImageCodec,
    x: Tensor,
    max_bytes: int | str,
    *,
    method: str = "estimate",
    refine: RefineSchedule | None = None,
    on_encode: OnEncode | None = None,
    on_step: OnStep | None = None,
    region: Region | None = None,
    **options: float | None,
) -> RateControlResult:
    """Code ``x`` into a file of at most ``max_bytes`` (a number, or text such as ``"20k"``:
    see :mod:`.targets`), as large as possible: the largest file made that fits.

    The same search as :func:`encode_to_bpp`; ``tolerance`` (default 0.003) is how far below
    the budget a file may be to stop. When none of the ``max_encodes`` files fits (rare: the
    second one aims below the budget by the measured file / estimate ratio), up to four more
    are made; a budget below the smallest file the model makes gives that file and a warning.
    """
    size = check_target_size(max_bytes)
    tolerance, start, max_encodes, slope = _setup(codec, method, "size", options)
    began = time.perf_counter()
    probe = _image_probe(codec, x, refine, region)
    goal = _Goal(8.0 * size, tolerance, cap_bits=8.0 * size)
    encode = _image_encoder(codec, probe, refine, on_step)
    run = _Run(probe, encode, goal, start, slope, max_encodes, on_encode)
    return _control(run, method, 8.0 * size / probe.num_pixels, size, began)


def encode_set_to_size(
    codec: ImageCodec,
    images: Sequence[Tensor],
    max_bytes: int | str,
    *,
    method: str = "estimate",
    on_encode: OnEncode | None = None,
    **options: float | None,
) -> RateControlResult:
    """Code several images at one λ index (the same rate-distortion slope for all, the
    allocation that minimises the total distortion for a total rate) with all files together
    within ``max_bytes``. ``result.stream`` is a :class:`~.probe.StreamSet` (one file per
    image, in order); an encode is one round over every image. Options as for
    :func:`encode_to_size`. Every image's analysis is kept in memory for the search."""
    size = check_target_size(max_bytes)
    tolerance, start, max_encodes, slope = _setup(codec, method, "size", options)
    began = time.perf_counter()
    probes = ProbeSet(codec, images)
    goal = _Goal(8.0 * size, tolerance, cap_bits=8.0 * size)
    run = _Run(probes, probes.encode, goal, start, slope, max_encodes, on_encode)
    return _control(run, method, 8.0 * size / probes.num_pixels, size, began)
