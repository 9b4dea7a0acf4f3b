"""BD-rate of tested curves against anchors, with the ``bjontegaard`` package.

``bjontegaard.bd_rate`` interpolates log-rate as a function of quality and averages the gap over
the quality range both curves cover (their overlap); nothing is extrapolated. The overlap
fraction is kept with every value so thin overlaps can be spotted in the table.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lae_vbr.atomic import write_atomic

from .provenance import run_meta
from .results import EvalError, RDCurve

__all__ = [
    "METHODS",
    "BDResult",
    "BDSettings",
    "bd_rate",
    "bd_rate_table",
    "to_json",
    "to_markdown",
    "write_bd_rates",
]

log = logging.getLogger(__name__)

METHODS = ("akima", "pchip", "cubic")
_LABELS = {"psnr-rgb": "PSNR", "ms-ssim-rgb-db": "MS-SSIM (dB)", "ms-ssim-rgb": "MS-SSIM"}


@dataclass
class BDResult:
    """One cell of the table; ``bd_rate`` is None (with a ``note``) when it cannot be computed."""

    test: str
    anchor: str
    metric: str
    bd_rate: float | None  # percent; negative = fewer bits than the anchor at equal quality
    method: str
    overlap: float | None  # shared quality range / union of the two ranges
    note: str = ""


@dataclass(frozen=True)
class BDSettings:
    """How BD-rates are computed and flagged (the ``bd_rate`` node of ``conf/eval.yaml``)."""

    metrics: tuple[str, ...] = ("psnr-rgb", "ms-ssim-rgb-db")
    method: str = "akima"
    min_overlap: float = 0.75

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EvalError(
                f"unknown bd_rate.method '{self.method}' (choose from {', '.join(METHODS)})"
            )

    @classmethod
    def from_config(
        cls, node: Mapping[str, Any] | None, metrics: Sequence[str] | None = None
    ) -> BDSettings:
        """Settings from a config node; ``metrics`` is the default when it names none."""
        node, default = node or {}, cls()
        return cls(
            tuple(node.get("metrics", metrics or default.metrics)),
            str(node.get("method", default.method)),
            float(node.get("min_overlap", default.min_overlap)),
        )


def _bjontegaard() -> ModuleType:
    """The ``bjontegaard`` package, imported on first use: it loads SciPy (about a second),
    which a run that fails on its inputs should not wait for."""
    import bjontegaard

    return bjontegaard


def _points(curve: RDCurve, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(rate, quality) sorted by quality; finite, positive-rate points, one per quality."""
    rate, quality = curve.metric("bpp"), curve.metric(metric)
    if rate is None or quality is None:
        return None
    pts = sorted((q, r) for r, q in zip(rate, quality, strict=True) if math.isfinite(q) and r > 0)
    unique = dict(pts)  # the interpolators need strictly increasing quality
    return np.fromiter(unique.values(), float), np.fromiter(unique.keys(), float)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    union = max(a.max(), b.max()) - min(a.min(), b.min())
    shared = min(a.max(), b.max()) - max(a.min(), b.min())
    return max(shared, 0.0) / union if union > 0 else 0.0


def bd_rate(
    anchor: RDCurve, test: RDCurve, metric: str = "psnr-rgb", method: str = "akima"
) -> BDResult:
    """BD-rate (%) of ``test`` against ``anchor`` on ``metric``; unusable pairs get a note."""
    if method not in METHODS:
        raise EvalError(f"unknown BD-rate method '{method}' (choose from {', '.join(METHODS)})")
    result = BDResult(test.name, anchor.name, metric, None, method, None)
    a, t = _points(anchor, metric), _points(test, metric)
    if a is None or t is None:
        result.note = f"no {metric} in {'anchor' if a is None else 'test'}"
        return result
    if len(a[1]) < 2 or len(t[1]) < 2:
        result.note = "needs at least 2 points per curve"
        return result
    result.overlap = _overlap(a[1], t[1])
    if result.overlap == 0:
        result.note = "quality ranges do not overlap"
        return result
    if np.any(np.diff(t[0]) <= 0) or np.any(np.diff(a[0]) <= 0):
        result.note = "rate not increasing with quality"
    with warnings.catch_warnings():  # the overlap is reported instead of warned about
        warnings.simplefilter("ignore")
        value = _bjontegaard().bd_rate(
            a[0], a[1], t[0], t[1], method=method, require_matching_points=False, min_overlap=0
        )
    result.bd_rate = float(value) if math.isfinite(value) else None
    return result


def bd_rate_table(
    tests: Sequence[RDCurve],
    anchors: Sequence[RDCurve],
    metrics: Sequence[str] = ("psnr-rgb", "ms-ssim-rgb-db"),
    method: str = "akima",
) -> list[BDResult]:
    """Every tested curve against every anchor (but itself), on every metric."""
    return [
        bd_rate(anchor, test, metric, method)
        for test in tests
        for metric in metrics
        for anchor in anchors
        if anchor.name != test.name
    ]


def _cell(r: BDResult | None, min_overlap: float) -> str:
    if r is None:
        return ""
    if r.bd_rate is None:
        return f"n/a ({r.note})"
    flag = " †" if r.overlap is not None and r.overlap < min_overlap else ""
    flag += " ‡" if r.note else ""
    return f"{r.bd_rate:+.2f} %{flag}"


def to_json(
    results: Sequence[BDResult],
    method: str,
    min_overlap: float,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The table as JSON, with the package version and method it was computed with, and the
    run's ``meta`` (version, commit, command, date; as in the results files) when given."""
    payload = {
        "package": f"bjontegaard {_bjontegaard().__version__}",
        "method": method,
        "min_overlap": min_overlap,
        **({"meta": dict(meta)} if meta else {}),
        "results": [asdict(r) for r in results],
    }
    return json.dumps(payload, indent=2) + "\n"


def to_markdown(results: Sequence[BDResult], min_overlap: float = 0.75) -> str:
    """One table per metric: rows = tested curves, columns = anchors."""
    if not results:
        return "No BD-rate computed (no anchors).\n"
    method = results[0].method
    lines = [
        "# BD-rate",
        "",
        f"BD-rate in % against each anchor (negative = fewer bits at equal quality), from "
        f"`bjontegaard` {_bjontegaard().__version__} with `{method}` interpolation of log-rate "
        f"over quality, averaged over the quality range both curves cover.",
        f"† overlap of the quality ranges below {min_overlap:.0%}; "
        "‡ rate not increasing with quality.",
    ]
    for metric in dict.fromkeys(r.metric for r in results):
        rows = [r for r in results if r.metric == metric]
        tests = list(dict.fromkeys(r.test for r in rows))
        anchors = list(dict.fromkeys(r.anchor for r in rows))
        cells = {(r.test, r.anchor): r for r in rows}
        lines += ["", f"## {_LABELS.get(metric, metric)}", ""]
        lines.append("| curve | " + " | ".join(anchors) + " |")
        lines.append("|---|" + "---|" * len(anchors))
        for test in tests:
            row = [_cell(cells.get((test, a)), min_overlap) for a in anchors]
            lines.append(f"| {test} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_bd_rates(
    results: Sequence[BDResult], out_dir: str | PathLike, settings: BDSettings
) -> dict[str, Path]:
    """Write ``bd_rate.md`` and ``bd_rate.json`` to ``out_dir`` and log the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(results, settings.min_overlap)
    files = {"bd_rate_md": out / "bd_rate.md", "bd_rate_json": out / "bd_rate.json"}
    write_atomic(files["bd_rate_md"], markdown)
    text = to_json(results, settings.method, settings.min_overlap, run_meta())
    write_atomic(files["bd_rate_json"], text)
    log.info("\n%s", markdown)
    return files
