"""Figures: the R-D figure (PSNR and MS-SSIM (dB) against bpp, tested curves over the anchors)
and the one-panel line plot of the studies. Drawn without pyplot, so no global backend or
figure state is touched."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lae_vbr.atomic import atomic_path

from .results import RDCurve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["rd_plot", "xy_plot"]

_PANELS = (("psnr-rgb", "PSNR (dB)"), ("ms-ssim-rgb-db", "MS-SSIM (dB)"))
_STYLE = {
    "model": {"marker": "o", "linewidth": 2.0, "zorder": 3},
    "classical": {"marker": "s", "markersize": 4, "linestyle": ":", "linewidth": 1.2},
    "anchor": {"marker": ".", "linestyle": "--", "linewidth": 1.0, "alpha": 0.8},
}


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure without pyplot; matplotlib is imported here, on first use, so a run that fails
    on its inputs does not wait for it."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=110)


def _default_max_bpp(curves: Sequence[RDCurve]) -> float | None:
    """Zoom on the model: 1.25 × its largest bpp (all points when there is no model)."""
    rates = [r for c in curves if c.kind == "model" for r in (c.metric("bpp") or [])]
    return 1.25 * max(rates) if rates else None


def rd_plot(
    curves: Sequence[RDCurve],
    path: str | PathLike,
    max_bpp: float | None = None,
    title: str = "",
) -> Path:
    """Write the two-panel figure; points beyond ``max_bpp`` are left out so the axes fit."""
    max_bpp = max_bpp or _default_max_bpp(curves)
    import matplotlib

    fig = _figure((12, 5))
    axes = fig.subplots(1, 2)
    order = sorted(curves, key=lambda c: ("anchor", "classical", "model").index(c.kind))
    palette = matplotlib.colormaps["tab10"].colors
    # the same colour for a curve in both panels; a single model in black (several: colours)
    single = sum(c.kind == "model" for c in order) == 1
    colors = {
        c.name: "black" if c.kind == "model" and single else palette[i % len(palette)]
        for i, c in enumerate(order)
    }
    for ax, (key, label) in zip(axes, _PANELS, strict=True):
        for curve in order:
            bpp, quality = curve.metric("bpp"), curve.metric(key)
            if bpp is None or quality is None:
                continue
            pts = [
                (b, q)
                for b, q in zip(bpp, quality, strict=True)
                if math.isfinite(q) and (max_bpp is None or b <= max_bpp)
            ]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            style = _STYLE.get(curve.kind, {})
            ax.plot(xs, ys, label=curve.name, color=colors[curve.name], **style)
        ax.set_xlabel("bit rate (bpp)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def xy_plot(
    series: Sequence[Mapping[str, Any]],
    path: str | PathLike,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """One panel of lines/points. Each series: ``x``, ``y``, ``label`` and optional matplotlib
    style keys (``marker``, ``linestyle``, ``color``…)."""
    fig = _figure((7, 5))
    ax = fig.subplots()
    for s in series:
        style = {k: v for k, v in s.items() if k not in ("x", "y", "label")}
        ax.plot(s["x"], s["y"], label=s.get("label"), **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if any(s.get("label") for s in series):
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _save(fig: Figure, path: str | PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    return path
