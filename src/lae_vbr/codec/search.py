"""The searches rate and quality control share: for the λ index where a measured value (a
rate estimate, a PSNR) meets a goal, with as few measurements as possible, along an axis on
which the value is close to a straight line.

Two axes: Σ log₂ m of the encoder-side LAE (:class:`~.rate_model.MaskSumCurve`, the R-λ and
D-λ models' axis; a position costs an LAE evaluation, about a hundredth of an encode) and the
λ index itself (:class:`IndexAxis`, free). The rate estimate is as smooth in the index as in
Σ log₂ m, so its search runs on the index once the R-λ model has given the first step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from .container import to_float32

__all__ = ["Axis", "IndexAxis", "Point", "next_position", "search_estimates"]

#: One measurement: (λ index, its position on the axis, the value measured).
Point = tuple[float, float, float]


class Axis(Protocol):
    """A monotone parametrisation of the λ range and its inverse (clamped to the range)."""

    max_index: float

    def position(self, lmbda_idx: float) -> float: ...

    def solve(self, position: float) -> tuple[float, str | None]: ...


class IndexAxis:
    """The λ index as its own axis: positions cost nothing."""

    def __init__(self, max_index: float) -> None:
        self.max_index = float(max_index)

    def position(self, lmbda_idx: float) -> float:
        return float(lmbda_idx)

    def solve(self, position: float) -> tuple[float, str | None]:
        """The index (float32, as files store it) nearest ``position`` in [0, max]."""
        if position <= 0:
            return 0.0, "low"
        if position >= self.max_index:
            return self.max_index, "high"
        return to_float32(position), None


def next_position(points: Sequence[Point], goal: float, prior: float) -> float:
    """Where (on the axis) the next measurement goes: between the nearest points on either
    side of the goal (regula falsi), else along the line through the point nearest to it with
    the slope of the two nearest (``prior`` when unusable). Estimates jitter by a few
    hundredths of a percent between close indices, so a bracket is safer than the newest
    secant. A value that does not rise along the axis near the goal (a flat or falling curve,
    e.g. an LAE still at the identity) gives no step: the next position is then the end of
    the axis towards the goal (±inf, which the axes clamp to their range)."""
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
    if not (math.isfinite(gain) and gain > 0):
        return math.copysign(math.inf, goal - near[0][2])
    return near[0][1] + (goal - near[0][2]) / gain


def _closest(points: Sequence[Point], goal: float) -> Point:
    """The point whose value is closest to ``goal``; among equals (a flat curve), the one
    furthest towards the goal (the lowest index when the values lie above it)."""
    return min(points, key=lambda p: (abs(p[2] - goal), p[0] if p[2] > goal else -p[0]))


def search_estimates(
    axis: Axis,
    value_at: Callable[[float], float],
    goal: float,
    known: dict[float, float],
    start: float,
    rtol: float,
    prior: float,
    probes: int,
    trust_line: bool = False,
) -> tuple[float, str | None]:
    """Estimates (``value_at``, cheap) from ``start`` until one is within ``rtol`` of
    ``goal`` or ``probes`` new ones were made; ``known`` (index → value) are points already
    estimated, ``prior`` the slope (value per unit of the axis) while only one is. Returns
    the index of the point closest to the goal, or with ``trust_line`` where the line through
    the points puts the goal (one estimate fewer, when they bracket it closely), and
    ``"low"``/``"high"`` when the goal lies beyond that end of the range."""
    points = [(i, axis.position(i), v) for i, v in known.items()]
    if start not in known:
        points.append((start, axis.position(start), value_at(start)))
    made = 0
    while True:
        best = _closest(points, goal)
        if abs(best[2] / goal - 1) <= rtol:
            break
        idx, clamped = axis.solve(next_position(points, goal, prior))
        if any(p[0] == idx for p in points):
            break
        if made == probes:
            if trust_line and clamped is None:
                return idx, None
            break
        points.append((idx, axis.position(idx), value_at(idx)))
        made += 1
    idx, _, value = _closest(points, goal)
    if idx == 0.0 and value > goal:
        return idx, "low"
    if idx == axis.max_index and value < goal:
        return idx, "high"
    return idx, None
