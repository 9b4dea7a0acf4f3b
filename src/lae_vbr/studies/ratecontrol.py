"""Rate-control study: how close to a target bit rate, at what cost, ours against baselines.

``python src/eval.py study=ratecontrol checkpoint=PATH [max_images=N]``

Every method returns the real file (header included) closest to the target among the encodes it
made; the error is (R − R_target) / R_target of that file. Methods:

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
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import Tensor

from lae_vbr.codec.container import to_float32
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.rate_control import (
    Attempt,
    RateControlResult,
    RateControlWarning,
    check_target_bpp,
    encode_to_bpp,
)
from lae_vbr.codec.rate_model import RateModel, fit_line
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.models.rate import index_of_value as lmbda_to_index
from lae_vbr.models.rate import value_of_index as index_to_lmbda

from .common import (
    StudyError,
    load_images,
    load_study_codec,
    markdown_table,
    study_threads,
    write_json,
)

__all__ = ["METHODS", "Calibration", "bisection", "hyperbolic", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """What a model does on average, from calibration images coded over a λ grid: the mean
    bpp per λ index (the global curve, inverted by log-linear interpolation) and the median
    slope of real bits against Σ log₂ m (for ``ours_calibrated``)."""

    indices: np.ndarray
    bpp: np.ndarray
    slope: float

    @classmethod
    def measure(
        cls, codec: ImageCodec, images: Sequence[Tensor], grid: Sequence[float]
    ) -> Calibration:
        rates, slopes = [], []
        for x in images:
            bits = [8.0 * codec.encode(x, idx).num_bytes for idx in grid]
            s_bits = RateModel(codec.model, x).log2_mask_sum(grid)
            slopes.append(fit_line(s_bits, bits, slope=None).slope)
            rates.append(np.asarray(bits) / (x.shape[-2] * x.shape[-1]))
        return cls(np.asarray(grid, float), np.mean(rates, axis=0), float(np.median(slopes)))

    def index_for(self, target_bpp: float) -> float:
        """λ index whose mean rate is ``target_bpp`` (clamped to the grid's ends)."""
        order = np.argsort(self.bpp)  # np.interp needs increasing x
        logs = np.log(self.bpp[order])
        idx = np.interp(math.log(target_bpp), logs, self.indices[order])
        return to_float32(float(idx))


def _single(codec: ImageCodec, x: Tensor, target: float, idx: float) -> RateControlResult:
    began = time.perf_counter()
    result = RateControlResult(target, [Attempt(to_float32(idx), codec.encode(x, idx))])
    result.seconds = time.perf_counter() - began
    return result


def hyperbolic(
    codec: ImageCodec, x: Tensor, target: float, fit_at: Sequence[float] = (1.0, 4.0)
) -> RateControlResult:
    """R = α·λ^β through two encodes at ``fit_at`` λ indices, solved for λ, then encoded."""
    began = time.perf_counter()
    result = RateControlResult(target)
    for idx in fit_at:
        result.attempts.append(Attempt(to_float32(idx), codec.encode(x, idx)))
    (la, ra), (lb, rb) = (
        (index_to_lmbda(codec.lmbdas, a.lmbda_idx), a.bpp) for a in result.attempts
    )
    beta = math.log(rb / ra) / math.log(lb / la)
    lmbda = math.exp(math.log(la) + math.log(target / ra) / beta) if beta > 0 else la
    lmbda = min(max(lmbda, min(codec.lmbdas)), max(codec.lmbdas))
    idx = to_float32(lmbda_to_index(codec.lmbdas, lmbda))
    if all(a.lmbda_idx != idx for a in result.attempts):
        result.attempts.append(Attempt(idx, codec.encode(x, idx)))
    result.seconds = time.perf_counter() - began
    return result


def bisection(
    codec: ImageCodec, x: Tensor, target: float, tolerance: float = 0.005, max_encodes: int = 12
) -> RateControlResult:
    """Bisection on the λ index with a real encode per step (rate grows with the index)."""
    began = time.perf_counter()
    result = RateControlResult(target)
    lo, hi = 0.0, float(codec.max_index)
    for _ in range(max_encodes):
        idx = to_float32(0.5 * (lo + hi))
        stream = codec.encode(x, idx)
        result.attempts.append(Attempt(idx, stream))
        if abs(stream.bpp / target - 1) <= tolerance:
            break
        lo, hi = (idx, hi) if stream.bpp < target else (lo, idx)
    result.seconds = time.perf_counter() - began
    return result


Method = Callable[[ImageCodec, Tensor, float], RateControlResult]


def _methods(cfg: DictConfig, curve: Calibration | None) -> dict[str, Method]:
    study = cfg.study
    bis = study.get("bisection") or {}
    fit_at = tuple(float(v) for v in study.get("hyperbolic_fit_at", (1.0, 4.0)))
    table: dict[str, Method] = {
        "ours": lambda c, x, t: encode_to_bpp(c, x, t, max_encodes=2),
        "ours_3": lambda c, x, t: encode_to_bpp(c, x, t, max_encodes=3),
        "hyperbolic": lambda c, x, t: hyperbolic(c, x, t, fit_at),
        "bisection": lambda c, x, t: bisection(
            c, x, t, float(bis.get("tolerance", 0.005)), int(bis.get("max_encodes", 12))
        ),
    }
    if curve is not None:
        table["global"] = lambda c, x, t: _single(c, x, t, curve.index_for(t))
        table["ours_global_start"] = lambda c, x, t: encode_to_bpp(
            c, x, t, max_encodes=2, start=curve.index_for(t)
        )
        table["ours_calibrated"] = lambda c, x, t: encode_to_bpp(
            c, x, t, max_encodes=2, slope=curve.slope
        )
    return {m: table[m] for m in study.methods}


#: Every method the study knows, in table order.
METHODS = (
    "ours",
    "ours_global_start",
    "ours_calibrated",
    "ours_3",
    "global",
    "hyperbolic",
    "bisection",
)


def _targets(study: DictConfig, low: float, high: float) -> list[float]:
    if study.get("targets"):
        return [check_target_bpp(t) for t in study.targets]
    return [low + float(q) * (high - low) for q in study.target_fractions]


def _summary(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for m in methods:
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run every method on every (image, target); write ``ratecontrol.json`` and ``.md``."""
    study = cfg.study
    unknown = [m for m in study.methods if m not in METHODS]
    if unknown:
        raise StudyError(f"unknown rate-control methods {unknown} (choose from {list(METHODS)})")
    if study.get("targets"):
        _targets(study, 0.0, 0.0)  # checks them before anything is loaded
    codec = load_study_codec(cfg)
    images = load_images(cfg.test_dir, cfg.get("max_images"))
    out = Path(cfg.paths.output_dir)
    cal = study.get("calibration") or {}
    with study_threads(cfg) as threads, warnings.catch_warnings():
        warnings.simplefilter("ignore", RateControlWarning)  # clamps are recorded per row
        curve = None
        needs_curve = {"global", "ours_global_start", "ours_calibrated"} & set(study.methods)
        if needs_curve:
            cal_images = load_images(cal["dir"], cal.get("max_images"))
            grid = lambda_grid(codec.max_index + 1, None, float(cal.get("lmbda_step", 0.5)))
            log.info("global curve: %d calibration images from %s", len(cal_images), cal["dir"])
            curve = Calibration.measure(codec, [im.x for im in cal_images], grid)
        methods = _methods(cfg, curve)
        rows: list[dict[str, Any]] = []
        for image in images:
            low = codec.encode(image.x, 0.0).bpp
            high = codec.encode(image.x, float(codec.max_index)).bpp
            for target in _targets(study, low, high):
                for name, method in methods.items():
                    result = method(codec, image.x, target)
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
            done = [r for r in rows if r["image"] == image.name and r["method"] == "ours"]
            if done:
                worst = max(abs(r["rel_error"]) for r in done)
                log.info("%s: range %.4f–%.4f bpp, ours max error %.2f %%", image.name, low,
                         high, 100 * worst)  # fmt: skip
    summary = _summary(rows, list(methods))
    table = _format(summary)
    described_targets = (
        f"targets {list(study.targets)} bpp"
        if study.get("targets")
        else f"targets at fractions {list(study.target_fractions)} of each image's range"
    )
    description = (
        f"rate control with {cfg.checkpoint} ({codec.id}) on {len(images)} images of "
        f"{cfg.test_dir}; {described_targets}; rate = whole file (header included); errors "
        f"over targets inside the image's range; {threads} CPU threads"
    )
    if curve is not None:
        description += f"; global curve from {cal['dir']} (first {cal.get('max_images')} images)"
    payload = {"description": description, "summary": summary, "rows": rows}
    if curve is not None:
        payload["calibration"] = {
            "lmbda_idx": curve.indices,
            "bpp": curve.bpp,
            "median_slope": curve.slope,
        }
    write_json(out / "ratecontrol.json", payload)
    (out / "ratecontrol.md").write_text(f"# Rate control\n\n{description}\n\n{table}")
    log.info("\n%s", table)
    log.info("results: %s", out)
    return payload
