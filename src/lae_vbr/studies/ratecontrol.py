"""Rate- and quality-control study: how close to a target, at what cost, ours against the
paper's R-λ model and baselines, on any folder of images.

``python src/eval.py study=ratecontrol checkpoint=PATH test_dir=FOLDER [max_images=N]``

Four kinds of target (``study.kinds``), each a table of error distribution, encodes and time:

* ``bpp``: a bit rate of the whole file (header included). Methods (:mod:`.baselines`):
  ``estimate`` (ours: the entropy model's estimate, then one or two real encodes),
  ``rlambda`` (the paper's R-λ model, 2 encodes) with its variants ``rlambda_global_start``,
  ``rlambda_calibrated`` and ``rlambda_3``, and the baselines ``global``, ``hyperbolic`` and
  ``bisection`` (the accuracy ceiling). The error is (R − R_target) / R_target of the file.
* ``size``: a file-size budget (:func:`~lae_vbr.codec.rate_control.encode_to_size`), the
  bpp targets' sizes; the error is (bytes − budget) / budget, and how often the file fits.
* ``psnr``: a PSNR (:func:`~lae_vbr.codec.quality_control.encode_to_psnr`) at fractions of
  each image's PSNR range; the error is the *decoded* file's PSNR − target (the decode is
  not counted in the method's time); ``bisection`` is the real encode + decode ceiling.
* ``total_size``: the whole folder within a budget at one λ index
  (:func:`~lae_vbr.codec.rate_control.encode_set_to_size`), at fractions of the set's range.

Targets are fractions of each image's own range (its rate at the lowest and the highest λ
index), so every target is reachable, or absolute bpp (``study.targets``). Times are CPU
times (process time; run the study on one thread), so another job on the machine does not
distort them, given as a multiple of one plain encode of the same image (the faster of the
two encodes that measure the range); the wall time is in the rows too.

From Python: ``rows = measure_ratecontrol(codec, images, rate_control_methods([...]))``,
``summary = summarise_ratecontrol(rows)``, ``write_ratecontrol(summary, rows, out_dir)``;
:func:`run` is the Hydra adapter.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.probe import ImageProbe, psnr_8bit
from lae_vbr.codec.quality_control import QualityResult, encode_to_psnr
from lae_vbr.codec.rate_control import (
    RateControlWarning,
    check_target_bpp,
    encode_set_to_size,
    encode_to_size,
)
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
    psnr_bisection,
    rate_control_methods,
)
from .common import StudyError, study_inputs, write_record

__all__ = [
    "KINDS",
    "METHODS",
    "TARGET_FRACTIONS",
    "Calibration",
    "StudyPlan",
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
#: The kinds of target the study can measure.
KINDS = ("bpp", "size", "psnr", "total_size")
#: Quality-control methods: ours (two) and the real-rounds ceiling.
PSNR_METHODS = ("interpolate", "secant", "bisection")

PsnrMethod = Callable[[ImageCodec, Any, float], QualityResult]


@dataclass
class StudyPlan:
    """What to measure besides the bpp methods: the other kinds, their methods and targets."""

    kinds: Sequence[str] = ("bpp",)
    size_methods: Sequence[str] = ("estimate", "rlambda")
    psnr_methods: Sequence[str] = ("interpolate", "secant")
    psnr_fractions: Sequence[float] = (0.25, 0.75)
    psnr_slope: float | None = None  # the prior of ``secant`` (dB per bit of mean log₂ m)
    psnr_rounds: int | None = None  # reconstructions before the encode (None: the default)
    set_fractions: Sequence[float] = (0.25, 0.5, 0.75)

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        unknown += [m for m in self.size_methods if m not in ("estimate", "rlambda")]
        unknown += [m for m in self.psnr_methods if m not in PSNR_METHODS]
        if unknown:
            raise StudyError(f"unknown rate-control kinds or methods {unknown} (kinds: "
                             f"{list(KINDS)}, psnr methods: {list(PSNR_METHODS)})")  # fmt: skip

    def psnr_method(self, name: str) -> PsnrMethod:
        if name == "bisection":
            return psnr_bisection
        options: dict[str, Any] = {"method": name, "slope": self.psnr_slope}
        if self.psnr_rounds is not None:
            options["rounds"] = self.psnr_rounds
        return lambda c, x, t: encode_to_psnr(c, x, t, **options)


Plain = tuple[float, float, float]  # bpp at λ index 0 and at the last, CPU s of an encode


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()`` and the CPU time it took: process time, which another job on the machine
    does not inflate as it does wall time (the study runs on one thread)."""
    began = time.process_time()
    result = call()
    return result, time.process_time() - began


def _plain(codec: ImageCodec, x: Any) -> Plain:
    """The image's range of rates and the CPU time of one plain encode (the faster of the
    two encodes that measure the range)."""
    times, rates = [], []
    for idx in (0.0, float(codec.max_index)):
        stream, cpu = _timed(lambda idx=idx: codec.encode(x, idx))
        rates.append(stream.bpp)
        times.append(cpu)
    return rates[0], rates[1], min(times)


def _row(
    kind: str, image: str, target: float, method: str, timed: tuple[Any, float], plain: float
) -> dict:
    """The fields every kind records: ``seconds`` is the method's wall time, ``cpu_seconds``
    its CPU time and ``time_ratio`` that against one plain encode's."""
    result, cpu = timed
    return {
        "kind": kind, "image": image, "target": target, "method": method,
        "lmbda_idx": result.lmbda_idx, "encodes": result.encodes,
        "estimates": getattr(result, "estimates", 0), "seconds": result.seconds,
        "cpu_seconds": cpu, "time_ratio": cpu / plain, "plain_cpu_seconds": plain,
    }  # fmt: skip


def _bpp_rows(
    codec: ImageCodec,
    image: InputImage,
    methods: Mapping[str, Method],
    goals: Sequence[float],
    plain: Plain,
) -> list[dict[str, Any]]:
    low, high, seconds = plain
    rows = []
    for target in goals:
        for name, method in methods.items():
            timed = _timed(lambda m=method, t=target: m(codec, image.x, t))
            result = timed[0]
            rows.append(_row("bpp", image.name, target, name, timed, seconds))
            rows[-1].update(achieved=result.bpp, error=result.relative_error,
                            image_range=[low, high], in_range=low <= target <= high)  # fmt: skip
    return rows


def _size_rows(
    codec: ImageCodec, image: InputImage, plan: StudyPlan, goals: Sequence[float], plain: Plain
) -> list[dict[str, Any]]:
    low, high, seconds = plain
    rows = []
    for target in goals:
        budget = int(target * image.num_pixels / 8)
        for name in plan.size_methods:
            timed = _timed(lambda b=budget, m=name: encode_to_size(codec, image.x, b, method=m))
            result = timed[0]
            rows.append(_row("size", image.name, budget, name, timed, seconds))
            rows[-1].update(achieved=result.num_bytes, error=result.num_bytes / budget - 1,
                            fits=result.num_bytes <= budget,
                            in_range=low <= 8 * budget / image.num_pixels <= high)  # fmt: skip
    return rows


def _psnr_rows(
    codec: ImageCodec, image: InputImage, plan: StudyPlan, plain: Plain
) -> list[dict[str, Any]]:
    probe = ImageProbe(codec, image.x)
    low, high = probe.psnr(0.0), probe.psnr(float(codec.max_index))
    rows = []
    for fraction in plan.psnr_fractions:
        target = low + fraction * (high - low)
        for name in plan.psnr_methods:
            method = plan.psnr_method(name)
            timed = _timed(lambda m=method, t=target: m(codec, image.x, t))
            result = timed[0]
            decoded = psnr_8bit(image.x, codec.decode(result.stream))  # not in the time
            rows.append(_row("psnr", image.name, target, name, timed, plain[2]))
            rows[-1].update(achieved=decoded, error=decoded - target, predicted=result.psnr,
                            rounds=len(result.rounds), image_range=[low, high],
                            in_range=True)  # fmt: skip
    return rows


def _image_rows(
    codec: ImageCodec,
    image: InputImage,
    methods: Mapping[str, Method],
    goals: Sequence[float] | None,
    fractions: Sequence[float],
    plan: StudyPlan,
) -> tuple[list[dict[str, Any]], Plain]:
    """The rows of one image (every kind but the set's) and its plain range and time."""
    plain = _plain(codec, image.x)
    low, high, _ = plain
    goals = list(goals or [low + float(q) * (high - low) for q in fractions])
    rows = _bpp_rows(codec, image, methods, goals, plain) if "bpp" in plan.kinds else []
    if "size" in plan.kinds:
        rows += _size_rows(codec, image, plan, goals, plain)
    if "psnr" in plan.kinds:
        rows += _psnr_rows(codec, image, plan, plain)
    return rows, plain


def _set_rows(
    codec: ImageCodec,
    images: Sequence[InputImage],
    plan: StudyPlan,
    plains: Mapping[str, Plain],
) -> list[dict[str, Any]]:
    """The whole set within budgets at fractions of its range of total sizes."""
    ends = [sum(plains[im.name][k] * im.num_pixels / 8 for im in images) for k in (0, 1)]
    seconds = sum(plains[im.name][2] for im in images)
    rows = []
    for fraction in plan.set_fractions:
        budget = int(ends[0] + fraction * (ends[1] - ends[0]))
        timed = _timed(lambda b=budget: encode_set_to_size(codec, [im.x for im in images], b))
        result = timed[0]
        streams = result.stream.streams  # type: ignore[union-attr]
        rows.append(_row("total_size", f"{len(images)} images", budget, "estimate", timed,
                         seconds))  # fmt: skip
        rows[-1].update(achieved=result.num_bytes, error=result.num_bytes / budget - 1,
                        fits=result.num_bytes <= budget, in_range=True,
                        per_image=[{"image": im.name, "bytes": s.num_bytes, "bpp": s.bpp}
                                   for im, s in zip(images, streams, strict=True)])  # fmt: skip
    return rows


def measure_ratecontrol(
    codec: ImageCodec,
    images: Sequence[InputImage],
    methods: Mapping[str, Method],
    targets: Sequence[float] | None = None,
    fractions: Sequence[float] = TARGET_FRACTIONS,
    plan: StudyPlan | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every (image, target) of each kind in ``plan`` (default: bit rates
    only); one row per run with the target, what was reached, the error and the encodes and
    time it took. Bit-rate and size targets: ``targets`` (bpp) when given, else ``fractions``
    of each image's range, its rates at the first and last λ index."""
    plan = plan or StudyPlan()
    goals = [check_target_bpp(t) for t in targets] if targets else None
    rows: list[dict[str, Any]] = []
    plains: dict[str, Plain] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateControlWarning)  # clamps are recorded per row
        for image in images:
            mine, plains[image.name] = _image_rows(codec, image, methods, goals, fractions, plan)
            rows += mine
            worst = max((abs(r["error"]) for r in mine if r["kind"] == "bpp"), default=0.0)
            log.info("%s: %d runs, largest bpp error %.2f %%", image.name, len(mine), 100 * worst)
        if "total_size" in plan.kinds:
            rows += _set_rows(codec, images, plan, plains)
    return rows


#: How each kind's errors are shown and judged: (unit, scale, thresholds).
_KIND_UNITS = {
    "bpp": ("%", 100.0, (0.005, 0.015)),
    "size": ("%", 100.0, (0.005, 0.015)),
    "total_size": ("%", 100.0, (0.005, 0.015)),
    "psnr": ("dB", 1.0, (0.1, 0.3)),
}


def _stats(group: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    err = np.abs([r["error"] for r in group])
    strict, loose = _KIND_UNITS[kind][2]
    out = {
        "cases": len(group),
        "mean_abs_error": float(err.mean()),
        "median_abs_error": float(np.median(err)),
        "p90_abs_error": float(np.quantile(err, 0.9)),
        "max_abs_error": float(err.max()),
        "within_strict": float(np.mean(err <= strict)),
        "within_loose": float(np.mean(err <= loose)),
        "encodes_mean": float(np.mean([r["encodes"] for r in group])),
        "encodes_max": int(max(r["encodes"] for r in group)),
        "estimates_mean": float(np.mean([r["estimates"] for r in group])),
        "time_ratio_mean": float(np.mean([r["time_ratio"] for r in group])),
        "time_ratio_p90": float(np.quantile([r["time_ratio"] for r in group], 0.9)),
        "time_ratio_max": float(np.max([r["time_ratio"] for r in group])),
        "seconds_mean": float(np.mean([r["seconds"] for r in group])),
    }
    if "fits" in group[0]:
        out["fits"] = float(np.mean([r["fits"] for r in group]))
    if "rounds" in group[0]:
        out["rounds_mean"] = float(np.mean([r["rounds"] for r in group]))
        out["rounds_max"] = int(max(r["rounds"] for r in group))
    return out


def summarise_ratecontrol(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kind and method (in the rows' order), over the targets inside each image's range:
    the error distribution (mean, median, 90th percentile, max of |error|, and how often
    within the strict and loose bound of the kind), the encodes, estimates and time."""
    out = []
    for kind, method in dict.fromkeys((r.get("kind", "bpp"), r["method"]) for r in rows):
        group = [r for r in rows if r.get("kind", "bpp") == kind and r["method"] == method
                 and r["in_range"]]  # fmt: skip
        if group:
            out.append({"kind": kind, "method": method, **_stats(group, kind)})
    return out


def _format_kind(summary: list[dict[str, Any]], kind: str) -> str:
    unit, scale, (strict, loose) = _KIND_UNITS[kind]
    fmt = (lambda v: f"{scale * v:.2f} %") if unit == "%" else (lambda v: f"{v:.3f} dB")
    bounds = [fmt(strict), fmt(loose)]
    rows = []
    for s in (s for s in summary if s["kind"] == kind):
        cost = f"{s['encodes_mean']:.2f} (max {s['encodes_max']})"
        if "rounds_mean" in s:
            cost += f", {s['rounds_mean']:.2f} rounds (max {s['rounds_max']})"
        rows.append([
            s["method"], s["cases"], fmt(s["mean_abs_error"]), fmt(s["median_abs_error"]),
            fmt(s["p90_abs_error"]), fmt(s["max_abs_error"]),
            f"{100 * s['within_strict']:.0f} %", f"{100 * s['within_loose']:.0f} %",
            f"{100 * s['fits']:.0f} %" if "fits" in s else "",
            cost, f"{s['estimates_mean']:.1f}",
            f"{s['time_ratio_mean']:.2f} (90th pct {s['time_ratio_p90']:.2f}, "
            f"max {s['time_ratio_max']:.2f})",
        ])  # fmt: skip
    headers = ["method", "cases", "mean abs error", "median", "90th pct", "max",
               f"≤ {bounds[0]}", f"≤ {bounds[1]}", "fits", "real encodes (mean)",
               "estimates", "CPU time / plain encode"]  # fmt: skip
    return f"### {kind}\n\n" + markdown_table(headers, rows)


def _format(summary: list[dict[str, Any]]) -> str:
    kinds = [k for k in KINDS if any(s["kind"] == k for s in summary)]
    return "\n\n".join(_format_kind(summary, k) for k in kinds)


def write_ratecontrol(
    summary: list[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    out_dir: str | PathLike,
    description: str = "",
    calibration: Calibration | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``ratecontrol.json`` (description, meta, summary, rows, the calibration used) and
    ``ratecontrol.md`` (a table per kind of target); ``meta``: the model and test set
    (:func:`write_record`)."""
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
    if "bpp" not in study.get("kinds", ["bpp"]) or not CALIBRATED & set(study.methods):
        return None
    cal = study.calibration
    images = load_test_images(cal.dir, cal.get("max_images"))
    grid = lambda_grid(codec.max_index + 1, None, float(cal.get("lmbda_step", 0.5)))
    log.info("global curve: %d calibration images from %s", len(images), cal.dir)
    return Calibration.measure(codec, [im.x for im in images], grid)


def _plan(study: DictConfig) -> StudyPlan:
    return StudyPlan(
        kinds=list(study.get("kinds", ["bpp"])),
        size_methods=list(study.get("size_methods", ["estimate", "rlambda"])),
        psnr_methods=list(study.get("psnr_methods", ["interpolate", "secant"])),
        psnr_fractions=[float(v) for v in study.get("psnr_fractions", [0.25, 0.75])],
        psnr_slope=study.get("psnr_secant_slope"),
        psnr_rounds=study.get("psnr_rounds"),
        set_fractions=[float(v) for v in study.get("total_size_fractions", [0.25, 0.5, 0.75])],
    )


def _description(cfg: DictConfig, about: str, threads: int, plan: StudyPlan,
                 calibrated: bool) -> str:  # fmt: skip
    study = cfg.study
    targets = (
        f"targets {list(study.targets)} bpp"
        if study.get("targets")
        else f"bpp and size targets at fractions {list(study.target_fractions)} of each "
        "image's range"
    )
    text = (
        f"rate and quality control with {about}; kinds {list(plan.kinds)}; {targets}; PSNR "
        f"targets at fractions {list(plan.psnr_fractions)} of each image's PSNR range; "
        f"total-size budgets at fractions {list(plan.set_fractions)} of the set's range; "
        f"rate = whole file (header included); errors over targets inside the image's range; "
        f"{threads} CPU threads"
    )
    if plan.psnr_rounds is not None:
        text += f"; {plan.psnr_rounds} reconstructions per PSNR target"
    if calibrated:
        cal = study.calibration
        folder = portable_path(cal.dir)
        text += f"; global curve from {folder} (first {cal.get('max_images')} images)"
    return text


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=ratecontrol``: measure, summarise, write."""
    study = cfg.study
    check_methods(list(study.methods))
    plan = _plan(study)
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
            inputs.codec, inputs.images, methods, targets, study.target_fractions, plan
        )
    description = _description(cfg, inputs.about, threads, plan, calibration is not None)
    summary = summarise_ratecontrol(rows)
    return write_ratecontrol(summary, rows, inputs.out_dir, description, calibration, inputs.meta)
