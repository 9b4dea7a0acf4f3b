"""What the studies share: one checkpoint, the test images, threads, tables, files, a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.data import list_images, load_rgb_image
from lae_vbr.evaluation import EvalError
from lae_vbr.models.registry import load_codec
from lae_vbr.models.state_dict import CheckpointError

__all__ = [
    "StudyError",
    "StudyImage",
    "load_images",
    "load_study_codec",
    "markdown_table",
    "study_threads",
    "write_json",
    "xy_plot",
]


class StudyError(EvalError):
    """A study cannot run as configured (shown as one line by ``src/eval.py``)."""


@dataclass
class StudyImage:
    name: str
    x: torch.Tensor  # (1, 3, H, W) in [0, 1]

    @property
    def num_pixels(self) -> int:
        return int(self.x.shape[-2] * self.x.shape[-1])


def load_images(folder: str | PathLike, limit: int | None = None) -> list[StudyImage]:
    """The first ``limit`` images of ``folder`` (sorted by name; all when None)."""
    paths = list_images(folder)
    paths = paths[: int(limit)] if limit else paths
    return [
        StudyImage(p.name, torch.from_numpy(load_rgb_image(p)).permute(2, 0, 1)[None] / 255.0)
        for p in paths
    ]


def _name(cfg: DictConfig) -> str:
    return str(cfg.study.get("name") or cfg.study.get("_target_", "study"))


def load_study_codec(cfg: DictConfig, variable_rate: bool = True) -> ImageCodec:
    """The one checkpoint of ``cfg.checkpoint``, ready to code (variable-rate if asked)."""
    value = cfg.get("checkpoint")
    if not value:
        raise StudyError(f"study '{_name(cfg)}' needs a model: set checkpoint=PATH")
    if not isinstance(value, str | PathLike):
        raise StudyError(f"study '{_name(cfg)}' takes one checkpoint, got a list")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    device = str(cfg.get("device", "auto"))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    codec = ImageCodec(load_codec(path, map_location=device))
    if variable_rate and not codec.variable_rate:
        raise StudyError(
            f"study '{_name(cfg)}' needs a variable-rate model; {path} holds the fixed-rate "
            f"model {codec.id}"
        )
    return codec


@contextmanager
def study_threads(cfg: DictConfig) -> Iterator[int]:
    """Run with ``cfg.num_threads`` torch threads (torch's default when null)."""
    before = torch.get_num_threads()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | PathLike, payload: Mapping[str, Any]) -> Path:
    """JSON with NaN/inf written as null and numpy values as plain numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(payload), indent=1, allow_nan=False) + "\n")
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub table; floats as given by the caller (pre-format them)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def xy_plot(
    series: Sequence[Mapping[str, Any]],
    path: str | PathLike,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """One panel of lines/points. Each series: ``x``, ``y``, ``label`` and optional matplotlib
    style keys (``marker``, ``linestyle``, ``color``…)."""
    fig = Figure(figsize=(7, 5), dpi=110)
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
