"""Latent-refinement (DLM) study: BD-rate of refined against plain encoding, and its cost.

``python src/eval.py study=dlm checkpoint=PATH [max_images=N] [study.steps=20]``

Each image is coded at each λ index twice, plainly and with refined latents
(:func:`~lae_vbr.codec.refine.refine_encode`), and both files are decoded by the normal
decoder. The two R-D curves (mean bpp of the y+z streams, mean PSNR and MS-SSIM) give the
BD-rate of refinement; the encoding time of both is recorded.

From Python: ``rows = measure_dlm(codec, images, coding_points(codec), RefineSchedule())``,
``summary = summarise_dlm(rows)``, ``write_dlm(summary, rows, out_dir)``; :func:`run` is the
Hydra adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import Tensor

from lae_vbr.codec.container import Bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.refine import RefineSchedule, refine_encode
from lae_vbr.evaluation import BDResult, RDCurve, bd_rate, curve_from_points, image_metrics
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.files import markdown_table
from lae_vbr.evaluation.inputs import InputImage, torch_threads
from lae_vbr.evaluation.metrics import average_by, to_8bit
from lae_vbr.evaluation.plots import xy_plot

from .common import StudyError, study_inputs, write_record

__all__ = ["DlmSummary", "coding_points", "measure_dlm", "run", "summarise_dlm", "write_dlm"]

log = logging.getLogger(__name__)

VARIANTS = ("plain", "refined")
_BD_METRICS = ("psnr-rgb", "ms-ssim-rgb-db")


def coding_points(codec: ImageCodec, indices: Sequence[float] | None = None) -> list[float | None]:
    """The λ indices to code at: ``indices`` (checked against the trained range) or every
    trained index; ``[None]`` for a fixed-rate model, which has its one λ."""
    if not codec.rate_axis.variable:
        return [None]
    return list(lambda_grid(codec.max_index + 1, indices, 1.0))


def _row(
    codec: ImageCodec, name: str, x: Tensor, idx: float | None, stream: Bitstream, seconds: float
) -> dict[str, Any]:
    x_hat = codec.decode(Bitstream.from_bytes(stream.to_bytes()))  # through the file format
    return {
        "image": name,
        "lmbda_idx": idx,
        "bpp": 8 * (len(stream.y_string) + len(stream.z_string)) / (x.shape[-2] * x.shape[-1]),
        "bpp_file": stream.bpp,
        **image_metrics(to_8bit(x), to_8bit(x_hat)),
        "encoding_time": seconds,
        "decoding_time": 0.0,
    }


def _code_both(
    codec: ImageCodec, image: InputImage, idx: float | None, schedule: RefineSchedule
) -> list[dict[str, Any]]:
    """The plain and the refined row of one image at one λ index, each with its encode time."""
    x = image.x
    start = time.perf_counter()
    stream = codec.encode(x, idx)
    plain = _row(codec, image.name, x, idx, stream, time.perf_counter() - start)
    start = time.perf_counter()
    stream, result = refine_encode(codec, x, idx, schedule)
    refined = _row(codec, image.name, x, idx, stream, time.perf_counter() - start)
    refined |= {"steps_run": len(result.losses) - 1, "best_step": result.best_step}
    refined |= {"loss_plain": result.losses[0], "loss_refined": min(result.losses)}
    return [{"variant": "plain", **plain}, {"variant": "refined", **refined}]


def measure_dlm(
    codec: ImageCodec,
    images: Sequence[InputImage],
    grid: Sequence[float | None],
    schedule: RefineSchedule | None = None,
) -> list[dict[str, Any]]:
    """Code every image at every point of ``grid`` (see :func:`coding_points`) plainly and
    with latents refined by ``schedule`` (the reference's when None); both files decoded."""
    schedule = schedule or RefineSchedule()
    rows: list[dict[str, Any]] = []
    for image in images:
        for idx in grid:
            plain, refined = _code_both(codec, image, idx, schedule)
            rows += [plain, refined]
            log.info(
                "%s λ index %s: %.4f → %.4f bpp, %.2f → %.2f dB, %.1f s",
                image.name, idx, plain["bpp"], refined["bpp"], plain["psnr"],
                refined["psnr"], refined["encoding_time"],
            )  # fmt: skip
    return rows


@dataclass
class DlmSummary:
    """Plain against refined: the averaged points per variant (in grid order), their R-D
    curves, the BD-rate of refined against plain per metric, the mean reduction of each
    image's own loss, and the mean encode time with refinement (s per image)."""

    points: dict[str, list[dict[str, Any]]]
    curves: dict[str, RDCurve]
    bd_rate: dict[str, BDResult]
    loss_reduction: float
    refined_seconds: float


def summarise_dlm(rows: Sequence[dict[str, Any]], name: str = "model") -> DlmSummary:
    """Average each variant's rows per λ index into a curve (labelled ``name (variant)``) and
    compare the two curves."""
    points = {
        v: average_by([r for r in rows if r["variant"] == v], ["lmbda_idx"]) for v in VARIANTS
    }
    curves = {v: curve_from_points(f"{name} ({v})", "", points[v]) for v in VARIANTS}
    refined = [r for r in rows if r["variant"] == "refined"]
    return DlmSummary(
        points,
        curves,
        {m: bd_rate(curves["plain"], curves["refined"], m) for m in _BD_METRICS},
        float(np.mean([1 - r["loss_refined"] / r["loss_plain"] for r in refined])),
        float(np.mean([r["encoding_time"] for r in refined])),
    )


def _format(summary: DlmSummary) -> str:
    """The BD-rates and loss reduction as a list, then the table of points."""
    lines = [
        f"- BD-rate of refined vs plain ({metric}): "
        + (f"{r.bd_rate:+.2f} %" if r.bd_rate is not None else f"n/a ({r.note})")
        for metric, r in summary.bd_rate.items()
    ]
    lines.append(
        "- mean reduction of the image's own loss bpp + 255²·λ·MSE (entropy-model estimate): "
        f"{100 * summary.loss_reduction:.2f} %"
    )
    rows = [
        [
            "-" if p["lmbda_idx"] is None else f"{p['lmbda_idx']:g}",
            f"{p['bpp']:.4f} → {r['bpp']:.4f}",
            f"{p['psnr-rgb']:.3f} → {r['psnr-rgb']:.3f}",
            f"{p['encoding_time']:.2f} → {r['encoding_time']:.2f}",
        ]
        for p, r in zip(*(summary.points[v] for v in VARIANTS), strict=True)
    ]
    headers = ["λ index", "bpp (y+z) plain → refined", "PSNR (dB)", "encode s per image"]
    return "\n".join(lines) + "\n\n" + markdown_table(headers, rows)


def write_dlm(
    summary: DlmSummary,
    rows: Sequence[dict[str, Any]],
    out_dir: str | PathLike,
    description: str = "",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``dlm.json`` (description, meta, BD-rates, both curves, rows), ``dlm.md`` and
    ``dlm.png`` (PSNR against bpp, plain and refined); ``meta``: the model and test set
    (:func:`write_record`)."""
    series = [
        {"x": c.metric("bpp"), "y": c.metric("psnr-rgb"), "label": v, "marker": "o"}
        for v, c in summary.curves.items()
    ]
    images = len({r["image"] for r in rows})
    title = f"latent refinement, {images} images"
    png = xy_plot(series, Path(out_dir) / "dlm.png", "bit rate (bpp, y+z)", "PSNR (dB)", title)
    payload = {
        "bd_rate": {
            m: {"bd_rate": r.bd_rate, "overlap": r.overlap, "note": r.note}
            for m, r in summary.bd_rate.items()
        },
        "curves": {v: c.to_json() for v, c in summary.curves.items()},
        "rows": list(rows),
    }
    body = _format(summary)
    title = "Latent refinement (DLM)"
    files = write_record(out_dir, "dlm", title, description, body, payload, meta)
    return {**files, "png": png}


#: The study's schedules by name (``study.schedule``).
SCHEDULES = {"fast": RefineSchedule(), "reference": RefineSchedule.reference()}
_OVERRIDES = (
    "steps", "lr", "decay", "momentum", "backoff", "min_change", "precision", "midpoint_on_rise",
)  # fmt: skip


def _schedule(study: DictConfig) -> RefineSchedule:
    """The named schedule with the ``study.<field>`` values that are not null."""
    name = str(study.get("schedule") or "fast")
    if name not in SCHEDULES:
        raise StudyError(f"study.schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    preset = SCHEDULES[name]
    given = {k: study.get(k) for k in _OVERRIDES if study.get(k) is not None}
    try:
        return replace(preset, **{k: type(getattr(preset, k))(v) for k, v in given.items()})
    except ValueError as err:
        raise StudyError(f"study.{'/'.join(given) or 'schedule'}: {err}") from err


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=dlm``: measure, summarise, write."""
    schedule = _schedule(cfg.study)
    inputs = study_inputs(cfg, needs_rate=False)
    grid = coding_points(inputs.codec, cfg.study.get("lmbda_grid"))
    log.info("DLM study: %d images × %d λ indices, %s", len(inputs.images), len(grid), schedule)
    with torch_threads(cfg.get("num_threads")) as threads:
        rows = measure_dlm(inputs.codec, inputs.images, grid, schedule)
    summary = summarise_dlm(rows, inputs.codec.loaded.name)
    description = (
        f"DLM study of {inputs.about}; schedule {schedule}; bpp = y+z streams; {threads} CPU "
        f"threads; mean refined encode {summary.refined_seconds:.1f} s per image"
    )
    return write_dlm(summary, rows, inputs.out_dir, description, inputs.meta)
