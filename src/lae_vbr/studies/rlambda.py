"""The R-λ study: does an image's real rate follow ``Σ log₂ m_λ + C`` across λ?

``python src/eval.py study=rlambda checkpoint=PATH [study.lmbda_step=0.25] [max_images=N]``

Every test image is coded for real at each index of a dense λ grid; beside each file's size
(whole file, header included, and the y+z streams alone) goes Σ log₂ m of the encoder-side
LAE. Per image and rate, a line ``R = a·S + C`` is fitted with a = 1 (the theory) and with a
free slope; R², mean and maximum absolute error of the predicted bpp are reported, with a plot
of real rate against Σ log₂ m for a few images.

From Python: ``rows = measure_rlambda(codec, images, grid)``, ``summary =
summarise_rlambda(rows)``, ``write_rlambda(summary, rows, out_dir)``; :func:`run` is the
Hydra adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.rate_model import RateModel, fit_line
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.files import markdown_table
from lae_vbr.evaluation.inputs import InputImage, torch_threads
from lae_vbr.evaluation.plots import xy_plot

from .common import StudyError, study_inputs, write_record

__all__ = [
    "RATES",
    "RLambdaSummary",
    "fit_image",
    "measure_rlambda",
    "run",
    "summarise_rlambda",
    "summarize_fits",
    "write_rlambda",
]

log = logging.getLogger(__name__)

#: The two rates fitted: the whole file (what rate control targets) and the entropy-coded
#: y+z streams (the convention of published R-D curves).
RATES = {"file": "bits_file", "streams": "bits_streams"}
_SLOPES = {"fixed": 1.0, "free": None}


def measure_rlambda(
    codec: ImageCodec, images: Sequence[InputImage], grid: Sequence[float]
) -> list[dict[str, Any]]:
    """Code every image at every λ index of ``grid`` for real; one row per (image, index)
    with the file's and the streams' bits beside Σ log₂ m, the model's rate predictor."""
    if not codec.rate_axis.variable:
        raise StudyError(f"the R-λ study needs a variable-rate model; {codec.id} is fixed-rate")
    rows: list[dict[str, Any]] = []
    for image in images:
        x = image.x
        s_bits = RateModel(codec.model, x).log2_mask_sum(grid)
        for idx, s in zip(grid, s_bits, strict=True):
            stream = codec.encode(x, idx)
            rows.append(
                {
                    "image": image.name,
                    "lmbda_idx": float(idx),
                    "pixels": image.num_pixels,
                    "log2_mask_sum": float(s),
                    "bits_file": 8 * stream.num_bytes,
                    "bits_streams": 8 * (len(stream.y_string) + len(stream.z_string)),
                }
            )
        log.info("%s: coded at %d λ indices", image.name, len(grid))
    return rows


def fit_image(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One image's lines ``bits = slope·S + C`` per rate, slope 1 and free; C and errors in
    bpp, so images of any size compare."""
    name, pixels = rows[0]["image"], rows[0]["pixels"]
    s = np.array([r["log2_mask_sum"] for r in rows])
    fits = []
    for rate, key in RATES.items():
        bits = np.array([r[key] for r in rows], float)
        for mode, slope in _SLOPES.items():
            fit = fit_line(s, bits, slope)
            err = np.abs(fit.residuals)
            fits.append(
                {
                    "image": name,
                    "rate": rate,
                    "slope_mode": mode,
                    "slope": fit.slope,
                    "C_bpp": fit.offset / pixels,
                    "r2": fit.r2,
                    "mean_abs_err_bpp": float(err.mean()) / pixels,
                    "max_abs_err_bpp": float(err.max()) / pixels,
                    "max_rel_err": float(np.max(err / bits)),
                    "bpp_range": [float(bits.min()) / pixels, float(bits.max()) / pixels],
                    "abs_err_bpp": (err / pixels).tolist(),
                    "rel_err": (err / bits).tolist(),
                }
            )
    return fits


def summarize_fits(fits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate and slope mode: R² over images, errors over every (image, λ) point."""
    out = []
    for rate in RATES:
        for mode in _SLOPES:
            group = [f for f in fits if f["rate"] == rate and f["slope_mode"] == mode]
            abs_err = np.concatenate([f["abs_err_bpp"] for f in group])
            rel_err = np.concatenate([f["rel_err"] for f in group])
            slopes = np.array([f["slope"] for f in group])
            r2 = np.array([f["r2"] for f in group])
            out.append(
                {
                    "rate": rate,
                    "slope_mode": mode,
                    "images": len(group),
                    "r2_mean": float(np.nanmean(r2)),
                    "r2_min": float(np.nanmin(r2)),
                    "mean_abs_err_bpp": float(abs_err.mean()),
                    "max_abs_err_bpp": float(abs_err.max()),
                    "mean_rel_err": float(rel_err.mean()),
                    "max_rel_err": float(rel_err.max()),
                    "slope_mean": float(slopes.mean()),
                    "slope_std": float(slopes.std()),
                }
            )
    return out


@dataclass
class RLambdaSummary:
    """The fitted lines per image (``fits``) and their errors over all images (``by_rate``)."""

    fits: list[dict[str, Any]]
    by_rate: list[dict[str, Any]]


def summarise_rlambda(rows: Sequence[dict[str, Any]]) -> RLambdaSummary:
    """Fit every image's rows (:func:`fit_image`) and summarize the fits."""
    names = list(dict.fromkeys(r["image"] for r in rows))
    fits = [f for name in names for f in fit_image([r for r in rows if r["image"] == name])]
    for f in fits:
        if f["rate"] == "file" and f["slope_mode"] == "fixed":
            log.info("%s: C = %.4f bpp, R² = %.4f (slope 1)", f["image"], f["C_bpp"], f["r2"])
    return RLambdaSummary(fits, summarize_fits(fits))


def _plot(
    rows: Sequence[dict[str, Any]], fits: list[dict[str, Any]], names: list[str], path: Path
) -> Path:
    series = []
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        pts = [r for r in rows if r["image"] == name]
        px = pts[0]["pixels"]
        s = np.array([r["log2_mask_sum"] for r in pts]) / px
        bpp = np.array([r["bits_file"] for r in pts]) / px
        series.append({"x": s, "y": bpp, "label": name, "color": color, "marker": "o",
                       "linestyle": "none", "markersize": 4})  # fmt: skip
        for mode, style in (("fixed", "-"), ("free", "--")):
            fit = next(
                f
                for f in fits
                if f["image"] == name and f["rate"] == "file" and f["slope_mode"] == mode
            )
            label = (
                f"slope 1, C={fit['C_bpp']:.3f}" if mode == "fixed" else f"slope {fit['slope']:.2f}"
            )
            series.append({"x": s, "y": fit["slope"] * s + fit["C_bpp"], "label": label,
                           "color": color, "linestyle": style, "linewidth": 1})  # fmt: skip
    return xy_plot(
        series,
        path,
        "Σ log₂ m / pixels (encoder-side LAE)",
        "real rate (bpp, whole file)",
        "R = Σ log₂ m + C: real rate over the λ grid, fitted lines (solid: slope 1, dashed: free)",
    )


def _format(summary: list[dict[str, Any]]) -> str:
    rows = [
        [
            s["rate"],
            "1 (theory)" if s["slope_mode"] == "fixed" else "free",
            f"{s['slope_mean']:.3f} ± {s['slope_std']:.3f}",
            f"{s['r2_mean']:.4f} (min {s['r2_min']:.4f})",
            f"{s['mean_abs_err_bpp']:.5f}",
            f"{s['max_abs_err_bpp']:.5f}",
            f"{100 * s['mean_rel_err']:.2f} %",
            f"{100 * s['max_rel_err']:.2f} %",
        ]
        for s in summary
    ]
    headers = ["rate", "slope", "fitted slope", "R² mean", "mean abs err (bpp)",
               "max abs err (bpp)", "mean rel err", "max rel err"]  # fmt: skip
    return markdown_table(headers, rows)


def write_rlambda(
    summary: RLambdaSummary,
    rows: Sequence[dict[str, Any]],
    out_dir: str | PathLike,
    description: str = "",
    plot_images: int = 4,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``rlambda.json`` (description, meta, summary, fits, rows), ``rlambda.md`` (the
    table) and ``rlambda.png`` (the first ``plot_images`` images' points and lines); ``meta``:
    the model and test set (:func:`write_record`)."""
    names = list(dict.fromkeys(r["image"] for r in rows))[:plot_images]
    png = _plot(rows, summary.fits, names, Path(out_dir) / "rlambda.png")
    payload = {"summary": summary.by_rate, "fits": summary.fits, "rows": list(rows)}
    body = _format(summary.by_rate)
    files = write_record(out_dir, "rlambda", "R-λ model", description, body, payload, meta)
    return {**files, "png": png}


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=rlambda``: measure, summarise, write."""
    study, inputs = cfg.study, study_inputs(cfg)
    grid = lambda_grid(inputs.codec.max_index + 1, study.get("lmbda_grid"), float(study.lmbda_step))
    log.info("R-λ study: %d images × %d λ indices", len(inputs.images), len(grid))
    with torch_threads(cfg.get("num_threads")) as threads:
        rows = measure_rlambda(inputs.codec, inputs.images, grid)
    description = (
        f"R-λ study of {inputs.about}, λ indices {grid}; real rate: whole file (header "
        f"included) and y+z streams; {threads} CPU threads"
    )
    summary = summarise_rlambda(rows)
    plot_images = study.get("plot_images", 4)
    return write_rlambda(summary, rows, inputs.out_dir, description, plot_images, inputs.meta)
