"""R-D curves in CompressAI's results format, anchors, and per-image rows.

A results file is ``{"name", "description", "meta", "results": {"bpp": [...], "psnr-rgb":
[...], ...}}`` with one entry per R-D point in every list, so this project's curves plot and
BD-rate beside CompressAI's published ones (``$LAE_VBR_SHARED/anchors/kodak``). ``name`` is
CompressAI's ``<architecture>-<metric>`` for learned codecs; ``meta`` is CompressAI-Trainer's
block of flat, dotted keys (see :mod:`.provenance`), optional when reading, so CompressAI's own
files and this project's older ones (without it) read alike. Undefined values (e.g. MS-SSIM on
images too small for it) are written as ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from lae_vbr.atomic import write_atomic
from lae_vbr.errors import LaeVbrError

from .files import plain, write_json
from .metrics import msssim_db

__all__ = [
    "EvalError",
    "RDCurve",
    "curve_from_points",
    "read_curve",
    "resolve_anchors",
    "slug",
    "write_curve",
    "write_rows",
]


class EvalError(LaeVbrError):
    """A problem with the evaluation's inputs (test set, anchors, grid); shown as one line."""


@dataclass
class RDCurve:
    """One codec's R-D points; ``results`` lists are aligned and sorted by bpp."""

    name: str
    description: str
    results: dict[str, list[Any]]
    kind: str = "anchor"  # anchor | model | classical (for plots; not written)
    path: Path | None = field(default=None, compare=False)
    meta: dict[str, Any] = field(default_factory=dict)  # written when not empty

    def metric(self, key: str) -> list[float] | None:
        """Values of ``key`` as floats (None → NaN); MS-SSIM in dB is derived when missing."""
        values = self.results.get(key)
        if values is None and key == "ms-ssim-rgb-db" and "ms-ssim-rgb" in self.results:
            values = [msssim_db(_as_float(v)) for v in self.results["ms-ssim-rgb"]]
        return None if values is None else [_as_float(v) for v in values]

    def to_json(self) -> dict[str, Any]:
        """The results-file content: name, description, meta (when there is one), results, in
        CompressAI-Trainer's order (NaN/inf as None)."""
        meta = {"meta": self.meta} if self.meta else {}
        return plain(
            {"name": self.name, "description": self.description, **meta, "results": self.results}
        )


def _as_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def curve_from_points(
    name: str,
    description: str,
    points: Sequence[Mapping[str, Any]],
    kind: str = "model",
    meta: Mapping[str, Any] | None = None,
) -> RDCurve:
    """Turn per-point dicts into an :class:`RDCurve` sorted by bpp (keys: their union)."""
    ordered = sorted(points, key=lambda p: float(p["bpp"]))
    keys = list(dict.fromkeys(k for p in ordered for k in p))
    results = {k: [p.get(k) for p in ordered] for k in ["bpp", *[k for k in keys if k != "bpp"]]}
    return RDCurve(name, description, results, kind, meta=dict(meta or {}))


def write_curve(curve: RDCurve, path: str | PathLike) -> Path:
    """Write ``curve`` as a CompressAI results file and remember where (``curve.path``)."""
    curve.path = write_json(path, curve.to_json(), indent=2)
    return curve.path


def read_curve(path: str | PathLike, kind: str = "anchor") -> RDCurve:
    """Read a CompressAI-format results file; :class:`EvalError` when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EvalError(f"cannot read results file {path}: {err}") from err
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not isinstance(results.get("bpp"), list):
        raise EvalError(f"{path} is not a CompressAI results file (no results.bpp list)")
    n = len(results["bpp"])
    lists = {k: v for k, v in results.items() if isinstance(v, list)}
    if any(len(v) != n for v in lists.values()):
        raise EvalError(f"{path}: the lists under 'results' have different lengths")
    name = str(data.get("name") or path.stem)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    return RDCurve(name, str(data.get("description", "")), lists, kind, path, meta)


def resolve_anchors(
    names: Iterable[str], anchors_dir: str | PathLike, extra: Iterable[str | PathLike] = ()
) -> list[RDCurve]:
    """Published anchors by file stem in ``anchors_dir``, then extra results files by path."""
    folder = Path(anchors_dir)
    available = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    curves = []
    for name in names:
        if str(name) not in available:
            where = f"available: {', '.join(available)}" if available else f"{folder} has none"
            raise EvalError(f"unknown anchor '{name}' ({where})")
        curves.append(read_curve(folder / f"{name}.json"))
    curves.extend(read_curve(Path(p).expanduser()) for p in extra)
    return curves


def slug(name: str) -> str:
    """A file-name-safe version of a curve name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "curve"


def write_rows(rows: Sequence[Mapping[str, Any]], stem: str | PathLike) -> tuple[Path, Path]:
    """Per-image rows as ``<stem>.csv`` and ``<stem>.json``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(csv_path, table.getvalue())
    return csv_path, write_json(json_path, rows)
