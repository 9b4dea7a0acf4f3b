"""The R-λ study: does an image's real rate follow ``Σ log₂ m_λ + C`` across λ?

``python src/eval.py study=rlambda checkpoint=PATH [study.lmbda_step=0.25] [max_images=N]``

Every test image is coded for real at each index of a dense λ grid; beside each file's size
(whole file, header included, and the y+z streams alone) goes Σ log₂ m of the encoder-side
LAE. Per image and rate, a line ``R = a·S + C`` is fitted with a = 1 (the theory) and with a
free slope; R², mean and maximum absolute error of the predicted bpp are reported, with a plot
of real rate against Σ log₂ m for a few images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lae_vbr.codec.rate_model import RateModel, fit_line
from lae_vbr.evaluation.coding import lambda_grid

from .common import (
    load_images,
    load_study_codec,
    markdown_table,
    study_threads,
    write_json,
    xy_plot,
)

__all__ = ["RATES", "run", "summarize_fits"]

log = logging.getLogger(__name__)

#: The two rates fitted: the whole file (what rate control targets) and the entropy-coded
#: y+z streams (the convention of published R-D curves).
RATES = {"file": "bits_file", "streams": "bits_streams"}


def _fit_rows(name: str, rows: list[dict[str, Any]], pixels: int) -> list[dict[str, Any]]:
    s = np.array([r["log2_mask_sum"] for r in rows])
    fits = []
    for rate, key in RATES.items():
        bits = np.array([r[key] for r in rows], float)
        for mode, slope in (("fixed", 1.0), ("free", None)):
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
        for mode in ("fixed", "free"):
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


def _plot(rows: list[dict[str, Any]], fits: list[dict[str, Any]], names: list[str], path: Path):
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Measure, fit, and write ``rlambda.json``, ``rlambda.md`` and ``rlambda.png``."""
    codec = load_study_codec(cfg)
    study = cfg.study
    grid = lambda_grid(codec.max_index + 1, study.get("lmbda_grid"), float(study.lmbda_step))
    images = load_images(cfg.test_dir, cfg.get("max_images"))
    out = Path(cfg.paths.output_dir)
    log.info("R-λ study: %d images × %d λ indices; outputs in %s", len(images), len(grid), out)
    rows: list[dict[str, Any]] = []
    fits: list[dict[str, Any]] = []
    with study_threads(cfg) as threads:
        for image in images:
            s_bits = RateModel(codec.model, image.x).log2_mask_sum(grid)
            mine = []
            for idx, s in zip(grid, s_bits, strict=True):
                stream = codec.encode(image.x, idx)
                mine.append(
                    {
                        "image": image.name,
                        "lmbda_idx": float(idx),
                        "pixels": image.num_pixels,
                        "log2_mask_sum": float(s),
                        "bits_file": 8 * stream.num_bytes,
                        "bits_streams": 8 * (len(stream.y_string) + len(stream.z_string)),
                    }
                )
            rows += mine
            fits += _fit_rows(image.name, mine, image.num_pixels)
            fixed = next(f for f in fits[-4:] if f["rate"] == "file" and f["slope_mode"] == "fixed")
            log.info(
                "%s: C = %.4f bpp, R² = %.4f (slope 1)", image.name, fixed["C_bpp"], fixed["r2"]
            )
    summary = summarize_fits(fits)
    table = _format(summary)
    names = [im.name for im in images[: int(study.get("plot_images", 4))]]
    plot = _plot(rows, fits, names, out / "rlambda.png")
    description = (
        f"R-λ study of {cfg.checkpoint} ({codec.id}) on {len(images)} images of {cfg.test_dir}, "
        f"λ indices {grid}; real rate: whole file (header included) and y+z streams; "
        f"{threads} CPU threads"
    )
    payload = {"description": description, "summary": summary, "fits": fits, "rows": rows}
    write_json(out / "rlambda.json", payload)
    (out / "rlambda.md").write_text(f"# R-λ model\n\n{description}\n\n{table}")
    log.info("\n%s", table)
    log.info("results: %s (plot %s)", out, plot)
    return payload
