"""Latent-refinement (DLM) study: BD-rate of refined against plain encoding, and its cost.

``python src/eval.py study=dlm checkpoint=PATH [max_images=N] [study.steps=20]``

Each image is coded at each λ index twice, plainly and with refined latents
(:func:`~lae_vbr.codec.refine.refine_encode`), and both files are decoded by the normal
decoder. The two R-D curves (mean bpp of the y+z streams, mean PSNR and MS-SSIM) give the
BD-rate of refinement; the encoding time of both is recorded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lae_vbr.codec.container import Bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.refine import RefineSchedule, refine_encode
from lae_vbr.evaluation import bd_rate, curve_from_points, image_metrics, summarize
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.metrics import to_8bit

from .common import (
    StudyError,
    StudyImage,
    load_images,
    load_study_codec,
    markdown_table,
    study_threads,
    write_json,
    xy_plot,
)

__all__ = ["run"]

log = logging.getLogger(__name__)


def _row(
    codec: ImageCodec, image: StudyImage, idx: float | None, stream: Bitstream, seconds: float
) -> dict[str, Any]:
    x_hat = codec.decode(Bitstream.from_bytes(stream.to_bytes()))  # through the file format
    pixels = image.num_pixels
    return {
        "image": image.name,
        "lmbda_idx": idx,
        "bpp": 8 * (len(stream.y_string) + len(stream.z_string)) / pixels,
        "bpp_file": stream.bpp,
        **image_metrics(to_8bit(image.x), to_8bit(x_hat)),
        "encoding_time": seconds,
        "decoding_time": 0.0,
    }


def _schedule(study: DictConfig) -> RefineSchedule:
    try:
        return RefineSchedule(
            steps=int(study.steps),
            lr=float(study.lr),
            decay=float(study.decay),
            min_change=float(study.min_change),
        )
    except ValueError as err:
        raise StudyError(f"study.steps/lr/decay/min_change: {err}") from err


def run(cfg: DictConfig) -> dict[str, Any]:
    """Code plain and refined over the λ grid; write ``dlm.json``, ``dlm.md``, ``dlm.png``."""
    study = cfg.study
    schedule = _schedule(study)
    codec = load_study_codec(cfg, variable_rate=False)
    if codec.variable_rate:
        grid: list[float | None] = list(
            lambda_grid(codec.max_index + 1, study.get("lmbda_grid"), 1.0)
        )
    else:
        grid = [None]
    images = load_images(cfg.test_dir, cfg.get("max_images"))
    out = Path(cfg.paths.output_dir)
    log.info("DLM study: %d images × %d λ indices, %s", len(images), len(grid), schedule)
    rows: list[dict[str, Any]] = []
    with study_threads(cfg) as threads:
        for image in images:
            for idx in grid:
                start = time.perf_counter()
                stream = codec.encode(image.x, idx)
                plain = _row(codec, image, idx, stream, time.perf_counter() - start)
                start = time.perf_counter()
                stream, result = refine_encode(codec, image.x, idx, schedule)
                refined = _row(codec, image, idx, stream, time.perf_counter() - start)
                refined |= {"steps_run": len(result.losses) - 1, "best_step": result.best_step}
                refined |= {"loss_plain": result.losses[0], "loss_refined": min(result.losses)}
                rows += [{"variant": "plain", **plain}, {"variant": "refined", **refined}]
                log.info(
                    "%s λ index %s: %.4f → %.4f bpp, %.2f → %.2f dB, %.1f s",
                    image.name, idx, plain["bpp"], refined["bpp"], plain["psnr"],
                    refined["psnr"], refined["encoding_time"],
                )  # fmt: skip
    curves = {}
    points_by_variant: dict[str, list[dict[str, Any]]] = {}
    for variant in ("plain", "refined"):
        points = []
        for idx in grid:
            group = [r for r in rows if r["variant"] == variant and r["lmbda_idx"] == idx]
            points.append({**summarize(group), "lmbda_idx": idx})
        points_by_variant[variant] = points
        curves[variant] = curve_from_points(f"{codec.loaded.name} ({variant})", "", points)
    bd = {
        metric: bd_rate(curves["plain"], curves["refined"], metric)
        for metric in ("psnr-rgb", "ms-ssim-rgb-db")
    }
    table_rows = []
    for p, r in zip(points_by_variant["plain"], points_by_variant["refined"], strict=True):
        table_rows.append(
            [
                "-" if p["lmbda_idx"] is None else f"{p['lmbda_idx']:g}",
                f"{p['bpp']:.4f} → {r['bpp']:.4f}",
                f"{p['psnr-rgb']:.3f} → {r['psnr-rgb']:.3f}",
                f"{p['encoding_time']:.2f} → {r['encoding_time']:.2f}",
            ]
        )
    table = markdown_table(
        ["λ index", "bpp (y+z) plain → refined", "PSNR (dB)", "encode s per image"], table_rows
    )
    bd_lines = "\n".join(
        f"- BD-rate of refined vs plain ({metric}): "
        + (f"{r.bd_rate:+.2f} %" if r.bd_rate is not None else f"n/a ({r.note})")
        for metric, r in bd.items()
    )
    done = [r for r in rows if r["variant"] == "refined"]
    gain = np.mean([1 - r["loss_refined"] / r["loss_plain"] for r in done])
    bd_lines += (
        f"\n- mean reduction of the image's own loss bpp + 255²·λ·MSE (entropy-model estimate): "
        f"{100 * gain:.2f} %"
    )
    extra = np.mean([r["encoding_time"] for r in done])
    description = (
        f"DLM study of {cfg.checkpoint} ({codec.id}) on {len(images)} images of {cfg.test_dir}; "
        f"schedule {schedule}; bpp = y+z streams; {threads} CPU threads; mean refined encode "
        f"{extra:.1f} s per image"
    )
    plot = xy_plot(
        [
            {
                "x": curves[v].metric("bpp"),
                "y": curves[v].metric("psnr-rgb"),
                "label": v,
                "marker": "o",
            }
            for v in ("plain", "refined")
        ],
        out / "dlm.png",
        "bit rate (bpp, y+z)",
        "PSNR (dB)",
        f"latent refinement, {len(images)} images",
    )
    payload = {
        "description": description,
        "bd_rate": {
            m: {"bd_rate": r.bd_rate, "overlap": r.overlap, "note": r.note} for m, r in bd.items()
        },
        "curves": {v: c.to_json() for v, c in curves.items()},
        "rows": rows,
    }
    write_json(out / "dlm.json", payload)
    (out / "dlm.md").write_text(
        f"# Latent refinement (DLM)\n\n{description}\n\n{bd_lines}\n\n{table}"
    )
    log.info("\n%s\n%s", bd_lines, table)
    log.info("results: %s (plot %s)", out, plot)
    return payload
