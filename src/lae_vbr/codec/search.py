"""The searches rate and quality control share: along Σ log₂ m of the encoder-side LAE (the
axis on which both the rate and the PSNR are close to straight lines), for the λ index where a
measured value meets a goal, with as few measurements as possible."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .rate_model import MaskSumCurve

__all__ = ["Point", "next_s", "search_estimates"]

#: One measurement: (λ index, Σ log₂ m there, the value measured).
Point = tuple[float, float, float]


def next_s(points: Sequence[Point], goal: float, prior: float) -> float:
    """Where (in Σ log₂ m) the next estimate goes: between the nearest points on either side
    of the goal (regula falsi), else along the line through the point nearest to it with the
    slope of the two nearest (``prior`` when unusable). Estimates jitter by a few hundredths
    of a percent between close indices, so a bracket is safer than the newest secant."""
    below = [p for p in points if p[2] < goal]
    above = [p for p in points if p[2] >= goal]
    if below and above:
        (_, s0, v0), (_, s1, v1) = max(below, key=lambda p: p[2]), min(above, key=lambda p: p[2])
        return s0 + (goal - v0) * (s1 - s0) / (v1 - v0)
    near = sorted(points, key=lambda p: abs(p[2] - goal))[:2]
    gain = prior
    if len(near) == 2 and abs(near[1][1] - near[0][1]) > 1e-9:
        slope = (near[1][2] - near[0][2]) / (near[1][1] - near[0][1])
        gain = slope if math.isfinite(slope) and slope > 0 else prior
    return near[0][1] + (goal - near[0][2]) / gain


def search_estimates(
    curve: MaskSumCurve,
    value_at: Callable[[float], float],
    goal: float,
    known: dict[float, float],
    start: float,
    rtol: float,
    prior: float,
    probes: int,
) -> tuple[float, str | None]:
    """Estimates (``value_at``, cheap) from ``start`` until one is within ``rtol`` of
    ``goal`` or ``probes`` new ones were made; ``known`` (index → value) are points already
    estimated. Returns the index of the point closest to the goal and ``"low"``/``"high"``
    when the goal lies beyond that end of the range."""
    points = [(i, curve.bits(i), v) for i, v in known.items()]
    if not points:
        points.append((start, curve.bits(start), value_at(start)))
    for _ in range(probes):
        best = min(points, key=lambda p: abs(p[2] - goal))
        if abs(best[2] / goal - 1) <= rtol:
            break
        idx, _ = curve.solve(next_s(points, goal, prior))
        if any(p[0] == idx for p in points):
            break
        points.append((idx, curve.bits(idx), value_at(idx)))
    idx, _, value = min(points, key=lambda p: abs(p[2] - goal))
    if idx == 0.0 and value > goal:
        return idx, "low"
    if idx == curve.max_index and value < goal:
        return idx, "high"
    return idx, None
