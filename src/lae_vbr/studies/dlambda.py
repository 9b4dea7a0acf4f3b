"""The D-λ study: does an image's distortion follow the LAE mask as its rate does?

``python src/eval.py study=dlambda checkpoint=PATH [study.lmbda_step=0.5] [max_images=N]``

For every test image and every index of a λ grid: Σ log₂ m of the encoder-side LAE (the R-λ
model's axis), the entropy model's rate estimate, the real file, and the PSNR of the image the
decoder returns (the reconstruction through the model without entropy coding, checked against
a real decode once per image). Per image, PSNR is fitted by a straight line against three
candidate axes:

* ``mask``: Σ log₂ m (reported as dB per bit of mean log₂ m; a uniform quantiser whose step
  shrinks as 1/m would give 20·log10(2) = 6.02);
* ``rate``: the estimated bits; ``log_rate``: their logarithm (the R-D curve's usual axis).

Besides R² and the residuals, the *two-round error* is what quality control with two
reconstructions does: the line through the rounds at the middle index and at one end,
evaluated at the grid points between them, against the measured PSNR.

From Python: ``rows = measure_dlambda(codec, images, grid)``, ``summary =
summarise_dlambda(rows)``, ``write_dlambda(summary, rows, out_dir)``; :func:`run` is the Hydra
adapter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.probe import ImageProbe, psnr_8bit
from lae_vbr.codec.quality_control import THEORY_DB_PER_BIT
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.files import markdown_table
from lae_vbr.evaluation.inputs import InputImage, torch_threads

from .common import StudyError, study_inputs, write_record

__all__ = ["AXES", "fit_axes", "measure_dlambda", "run", "summarise_dlambda", "write_dlambda"]

log = logging.getLogger(__name__)

#: The candidate axes of the D-λ line: the row value each reads.
AXES = {"mask": "mean_log2_mask", "rate": "bits_estimate", "log_rate": "log_bits_estimate"}


def _image_rows(codec: ImageCodec, image: InputImage, grid: Sequence[float]) -> list[dict]:
    probe = ImageProbe(codec, image.x)
    elements = probe.num_latent_elements
    rows = []
    for idx in grid:
        s_bits, estimate = probe.rates.bits(idx), probe.estimate_bits(idx)
        rows.append(
            {
                "image": image.name,
                "lmbda_idx": float(idx),
                "pixels": image.num_pixels,
                "mean_log2_mask": s_bits / elements,
                "bits_estimate": estimate,
                "log_bits_estimate": math.log(estimate),
                "bits_file": 8 * probe.encode(idx).num_bytes,
                "psnr": probe.psnr(idx),
            }
        )
    middle = rows[len(rows) // 2]
    decoded = codec.decode(probe.encode(middle["lmbda_idx"]))
    middle["psnr_decoded"] = psnr_8bit(image.x, decoded)  # the reconstruction is the decode
    return rows


def measure_dlambda(
    codec: ImageCodec, images: Sequence[InputImage], grid: Sequence[float]
) -> list[dict[str, Any]]:
    """One row per (image, λ index of ``grid``): the axes, the real file and the PSNR."""
    if not codec.rate_axis.variable:
        raise StudyError(f"the D-λ study needs a variable-rate model; {codec.id} is fixed-rate")
    rows: list[dict[str, Any]] = []
    for image in images:
        rows += _image_rows(codec, image, grid)
        psnrs = [r["psnr"] for r in rows[-len(grid) :]]
        log.info("%s: PSNR %.3f–%.3f dB over the λ grid", image.name, min(psnrs), max(psnrs))
    return rows


def _two_round_error(x: np.ndarray, psnr: np.ndarray) -> float:
    """Largest |error| of the line through the middle point and each end, over the points
    between them (what :func:`~lae_vbr.codec.quality_control.encode_to_psnr` does)."""
    mid, worst = len(x) // 2, 0.0
    for end in (0, len(x) - 1):
        lo, hi = sorted((mid, end))
        if x[end] == x[mid]:
            continue
        slope = (psnr[end] - psnr[mid]) / (x[end] - x[mid])
        line = psnr[mid] + slope * (x[lo : hi + 1] - x[mid])
        worst = max(worst, float(np.max(np.abs(line - psnr[lo : hi + 1]))))
    return worst


def fit_axes(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One image's PSNR lines, one per axis: slope, R², residuals, two-round error."""
    psnr = np.array([r["psnr"] for r in rows])
    fits = []
    for axis, key in AXES.items():
        x = np.array([r[key] for r in rows])
        slope, offset = np.polyfit(x, psnr, 1)
        residuals = psnr - (slope * x + offset)
        total = float(np.sum((psnr - psnr.mean()) ** 2))
        fits.append(
            {
                "image": rows[0]["image"],
                "axis": axis,
                "slope": float(slope),
                "r2": 1 - float(np.sum(residuals**2)) / total if total > 0 else math.nan,
                "max_abs_residual_db": float(np.max(np.abs(residuals))),
                "two_round_error_db": _two_round_error(x, psnr),
                "psnr_range_db": float(np.ptp(psnr)),
            }
        )
    theory = psnr - THEORY_DB_PER_BIT * np.array([r["mean_log2_mask"] for r in rows])
    fits[0]["theory_max_abs_residual_db"] = float(np.max(np.abs(theory - theory.mean())))
    return fits


def summarise_dlambda(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per axis over the images: R², residuals, two-round errors, slopes; and how far the
    reconstruction's PSNR was from a real decode's."""
    names = list(dict.fromkeys(r["image"] for r in rows))
    fits = [f for n in names for f in fit_axes([r for r in rows if r["image"] == n])]
    axes = []
    for axis in AXES:
        group = [f for f in fits if f["axis"] == axis]
        keys = [k for k in group[0] if k not in ("image", "axis")]
        values = {k: np.array([f[k] for f in group]) for k in keys}
        axes.append(
            {
                "axis": axis,
                "images": len(group),
                "r2_mean": float(np.nanmean(values["r2"])),
                "r2_min": float(np.nanmin(values["r2"])),
                "max_abs_residual_db": float(values["max_abs_residual_db"].max()),
                "two_round_error_mean_db": float(values["two_round_error_db"].mean()),
                "two_round_error_max_db": float(values["two_round_error_db"].max()),
                "slope_mean": float(values["slope"].mean()),
                "slope_cv": float(values["slope"].std() / abs(values["slope"].mean())),
            }
        )
    mask = [f for f in fits if f["axis"] == "mask"]
    checks = [abs(r["psnr"] - r["psnr_decoded"]) for r in rows if "psnr_decoded" in r]
    return {
        "axes": axes,
        "fits": fits,
        "psnr_range_db": [
            min(f["psnr_range_db"] for f in mask),
            max(f["psnr_range_db"] for f in mask),
        ],
        "theory_max_abs_residual_db": float(max(f["theory_max_abs_residual_db"] for f in mask)),
        "reconstruction_vs_decode_max_db": float(max(checks)) if checks else math.nan,
    }


def _format(summary: dict[str, Any]) -> str:
    units = {"mask": "dB per bit of mean log₂ m", "rate": "dB per bit", "log_rate": "dB per e×"}
    rows = [
        [
            a["axis"],
            f"{a['r2_mean']:.4f} (min {a['r2_min']:.4f})",
            f"{a['max_abs_residual_db']:.3f}",
            f"{a['two_round_error_mean_db']:.3f} / {a['two_round_error_max_db']:.3f}",
            f"{a['slope_mean']:.4g} {units[a['axis']]} (CV {100 * a['slope_cv']:.0f} %)",
        ]
        for a in summary["axes"]
    ]
    headers = ["axis", "R² mean", "max abs residual (dB)", "two-round error mean / max (dB)",
               "fitted slope (spread over images)"]  # fmt: skip
    lo, hi = summary["psnr_range_db"]
    notes = (
        f"\n\nPSNR range over the λ grid per image: {lo:.3f}–{hi:.3f} dB. Mask axis with the "
        f"theory's slope (6.02 dB per bit of mean log₂ m) and a fitted offset: max abs residual "
        f"{summary['theory_max_abs_residual_db']:.3f} dB. Reconstruction against a real decode "
        f"(one index per image): max |ΔPSNR| {summary['reconstruction_vs_decode_max_db']:.2g} dB."
    )
    return markdown_table(headers, rows) + notes


def write_dlambda(
    summary: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    out_dir: str | PathLike,
    description: str = "",
) -> dict[str, Path]:
    """``dlambda.json`` (description, summary with the per-image fits, rows) and
    ``dlambda.md`` (the table)."""
    payload = {"summary": summary, "rows": list(rows)}
    return write_record(out_dir, "dlambda", "D-λ model", description, _format(summary), payload)


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=dlambda``: measure, summarise, write."""
    study, inputs = cfg.study, study_inputs(cfg)
    grid = lambda_grid(inputs.codec.max_index + 1, study.get("lmbda_grid"), float(study.lmbda_step))
    log.info("D-λ study: %d images × %d λ indices", len(inputs.images), len(grid))
    with torch_threads(cfg.get("num_threads")) as threads:
        rows = measure_dlambda(inputs.codec, inputs.images, grid)
    description = (
        f"D-λ study of {inputs.about}, λ indices {grid}; PSNR of the decoded image (8-bit) "
        f"against Σ log₂ m, the estimated rate and its log; {threads} CPU threads"
    )
    return write_dlambda(summarise_dlambda(rows), rows, inputs.out_dir, description)
