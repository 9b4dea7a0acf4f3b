"""Writing results as files people and programs read back: strict JSON and Markdown tables.

Every JSON this package writes goes through :func:`write_json`, so NaN and infinities become
``null`` (strict JSON that any reader parses) and numpy values become plain numbers, the same
way in R-D curves, per-image rows and study records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from lae_vbr.atomic import write_atomic

__all__ = ["markdown_table", "plain", "write_json"]


def plain(value: Any) -> Any:
    """``value`` with mappings, sequences and numpy values made JSON-ready, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | PathLike, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as strict JSON (see :func:`plain`), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(plain(payload), indent=indent, allow_nan=False) + "\n")
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub table; cells as ``str`` gives them, so callers format floats beforehand."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
