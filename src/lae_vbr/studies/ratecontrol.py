"""Rate-control study: how close to a target bit rate, at what cost, ours against baselines.

``python src/eval.py study=ratecontrol checkpoint=PATH [max_images=N]``

Every method returns the real file (header included) closest to the target among the encodes it
made; the error is (R − R_target) / R_target of that file. Methods (:mod:`.baselines`):

* ``ours``: the R-λ model (:func:`~lae_vbr.codec.rate_control.encode_to_bpp`), first encode at
  the middle λ index, 2 encodes; ``ours_global_start``: the same, first encode where the global
  curve puts the target; ``ours_calibrated``: slope of the line = the model's median slope on
  the calibration images instead of 1; ``ours_3``: 3 encodes (a secant slope correction).
* ``global``: one content-agnostic R(λ) curve, the mean rate of calibration images (the training
  photos) per λ index, inverted log-linearly; 1 encode.
* ``hyperbolic``: per image R = α·λ^β through two encodes, solved for λ; 3 encodes.
* ``bisection``: bisection on the λ index with real encodes until within ``tolerance``
  (the accuracy ceiling, and its cost).

Targets are either absolute (``study.targets``) or, by default, fractions of each image's own
range between its rate at the lowest and at the highest λ index, so every target is reachable.

From Python: ``rows = measure_ratecontrol(codec, images, rate_control_methods([...]))``,
``summary = summarise_ratecontrol(rows)``, ``write_ratecontrol(summary, rows, out_dir)``;
:func:`run` is the Hydra adapter.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.rate_control import RateControlWarning, check_target_bpp
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.files import markdown_table
from lae_vbr.evaluation.inputs import InputImage, load_test_images, torch_threads
from lae_vbr.paths import portable_path

from .baselines import (
    CALIBRATED,
    METHODS,
    Calibration,
    Method,
    bisection,
    check_methods,
    hyperbolic,
    rate_control_methods,
)
from .common import study_inputs, write_record

__all__ = [
    "METHODS",
    "TARGET_FRACTIONS",
    "Calibration",
    "bisection",
    "hyperbolic",
    "measure_ratecontrol",
    "rate_control_methods",
    "run",
    "summarise_ratecontrol",
    "write_ratecontrol",
]

log = logging.getLogger(__name__)

#: Default targets: these fractions of each image's range of rates.
TARGET_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _image_rows(
    codec: ImageCodec,
    image: InputImage,
    methods: Mapping[str, Method],
    targets: Sequence[float] | None,
    fractions: Sequence[float],
) -> list[dict[str, Any]]:
    x = image.x
    low = codec.encode(x, 0.0).bpp
    high = codec.encode(x, float(codec.max_index)).bpp
    rows = []
    for target in targets or [low + float(q) * (high - low) for q in fractions]:
        for name, method in methods.items():
            result = method(codec, x, target)
            rows.append(
                {
                    "image": image.name,
                    "target_bpp": target,
                    "method": name,
                    "bpp": result.bpp,
                    "rel_error": result.relative_error,
                    "lmbda_idx": result.lmbda_idx,
                    "encodes": result.encodes,
                    "seconds": result.seconds,
                    "image_range_bpp": [low, high],
                    "in_range": low <= target <= high,
                }
            )
    return rows


def measure_ratecontrol(
    codec: ImageCodec,
    images: Sequence[InputImage],
    methods: Mapping[str, Method],
    targets: Sequence[float] | None = None,
    fractions: Sequence[float] = TARGET_FRACTIONS,
) -> list[dict[str, Any]]:
    """Run every method on every (image, target); one row per run with the rate reached, the
    relative error and the encodes and time it took. Targets: ``targets`` (bpp) when given,
    else ``fractions`` of each image's range, its rates at the first and last λ index."""
    targets = [check_target_bpp(t) for t in targets] if targets else None
    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateControlWarning)  # clamps are recorded per row
        for image in images:
            mine = _image_rows(codec, image, methods, targets, fractions)
            rows += mine
            ours = [abs(r["rel_error"]) for r in mine if r["method"] == "ours"]
            if ours:
                low, high = mine[0]["image_range_bpp"]
                log.info("%s: range %.4f–%.4f bpp, ours max error %.2f %%", image.name, low,
                         high, 100 * max(ours))  # fmt: skip
    return rows


def summarise_ratecontrol(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (in the rows' order), over the targets inside each image's range: the
    relative errors, how often within 1 % and 3 %, the encodes and the time."""
    out = []
    for m in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == m and r["in_range"]]
        if not group:
            continue
        err = np.abs([r["rel_error"] for r in group])
        out.append(
            {
                "method": m,
                "cases": len(group),
                "mean_abs_rel_error": float(err.mean()),
                "max_abs_rel_error": float(err.max()),
                "within_1pct": float(np.mean(err <= 0.01)),
                "within_3pct": float(np.mean(err <= 0.03)),
                "encodes_mean": float(np.mean([r["encodes"] for r in group])),
                "encodes_max": int(max(r["encodes"] for r in group)),
                "seconds_mean": float(np.mean([r["seconds"] for r in group])),
            }
        )
    return out


def _format(summary: list[dict[str, Any]]) -> str:
    rows = [
        [
            s["method"],
            s["cases"],
            f"{100 * s['mean_abs_rel_error']:.2f} %",
            f"{100 * s['max_abs_rel_error']:.2f} %",
            f"{100 * s['within_1pct']:.0f} %",
            f"{100 * s['within_3pct']:.0f} %",
            f"{s['encodes_mean']:.2f} (max {s['encodes_max']})",
            f"{s['seconds_mean']:.2f}",
        ]
        for s in summary
    ]
    headers = ["method", "cases", "mean abs rel err", "max abs rel err", "≤ 1 %", "≤ 3 %",
               "real encodes", "time per image (s)"]  # fmt: skip
    return markdown_table(headers, rows)


def write_ratecontrol(
    summary: list[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    out_dir: str | PathLike,
    description: str = "",
    calibration: Calibration | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``ratecontrol.json`` (description, meta, summary, rows, the calibration used) and
    ``ratecontrol.md`` (the table); ``meta``: the model and test set (:func:`write_record`)."""
    payload: dict[str, Any] = {"summary": summary, "rows": list(rows)}
    if calibration is not None:
        payload["calibration"] = {
            "lmbda_idx": calibration.indices,
            "bpp": calibration.bpp,
            "median_slope": calibration.slope,
        }
    body = _format(summary)
    return write_record(out_dir, "ratecontrol", "Rate control", description, body, payload, meta)


def _calibration(study: DictConfig, codec: ImageCodec) -> Calibration | None:
    """The global curve from ``study.calibration`` when a chosen method needs it."""
    if not CALIBRATED & set(study.methods):
        return None
    cal = study.calibration
    images = load_test_images(cal.dir, cal.get("max_images"))
    grid = lambda_grid(codec.max_index + 1, None, float(cal.get("lmbda_step", 0.5)))
    log.info("global curve: %d calibration images from %s", len(images), cal.dir)
    return Calibration.measure(codec, [im.x for im in images], grid)


def _description(cfg: DictConfig, about: str, threads: int, calibrated: bool) -> str:
    study = cfg.study
    targets = (
        f"targets {list(study.targets)} bpp"
        if study.get("targets")
        else f"targets at fractions {list(study.target_fractions)} of each image's range"
    )
    text = (
        f"rate control with {about}; {targets}; rate = whole file (header included); errors "
        f"over targets inside the image's range; {threads} CPU threads"
    )
    if calibrated:
        cal = study.calibration
        folder = portable_path(cal.dir)
        text += f"; global curve from {folder} (first {cal.get('max_images')} images)"
    return text


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=ratecontrol``: measure, summarise, write."""
    study = cfg.study
    check_methods(list(study.methods))
    targets = [check_target_bpp(t) for t in study.targets] if study.get("targets") else None
    inputs = study_inputs(cfg)
    bis = study.get("bisection") or {}
    with torch_threads(cfg.get("num_threads")) as threads:
        calibration = _calibration(study, inputs.codec)
        methods = rate_control_methods(
            list(study.methods),
            calibration,
            study.get("hyperbolic_fit_at", (1.0, 4.0)),
            float(bis.get("tolerance", 0.005)),
            int(bis.get("max_encodes", 12)),
        )
        rows = measure_ratecontrol(
            inputs.codec, inputs.images, methods, targets, study.target_fractions
        )
    description = _description(cfg, inputs.about, threads, calibration is not None)
    summary = summarise_ratecontrol(rows)
    return write_ratecontrol(summary, rows, inputs.out_dir, description, calibration, inputs.meta)
