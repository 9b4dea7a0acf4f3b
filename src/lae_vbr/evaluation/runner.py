"""The R-D evaluation (``study=rd``): codecs × operating points × test images → R-D curves,
per-image rows, a plot, BD-rates against anchors, logs.

From Python, without Hydra: measure with :func:`~.measure.measure_checkpoints` and
:func:`~.measure.measure_classical`, then :func:`summarise_rd` and :func:`write_rd`.
:func:`evaluate` is the adapter ``conf/study/rd.yaml`` names: it checks everything cheap
before any coding starts (checkpoint files, anchors, classical codecs, BD-rate method, test
images), so bad input fails in a second with a one-line message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .bdrate import BDResult, BDSettings, bd_rate_table, write_bd_rates
from .classical import ClassicalCodec, codecs_from_config
from .inputs import InputImage, checkpoint_paths, load_test_images, torch_threads
from .loggers import send_to_loggers
from .measure import Measured, RDSettings, Track, curve_of, measure_checkpoints, measure_classical
from .plots import rd_plot
from .results import EvalError, RDCurve, resolve_anchors, slug, write_curve, write_rows

__all__ = ["EvalReport", "evaluate", "evaluate_with", "progress_bar", "summarise_rd", "write_rd"]

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """What an evaluation produced: measured curves (model first), anchors, BD-rates, the
    per-image rows and, once written, the files."""

    curves: list[RDCurve]
    anchors: list[RDCurve]
    bd_rates: list[BDResult]
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    stems: dict[str, str] = field(default_factory=dict)  # curve name → results/<stem>.json
    files: dict[str, Path] = field(default_factory=dict)
    output_dir: Path | None = None


def summarise_rd(
    measured: Sequence[Measured],
    anchors: Sequence[RDCurve] = (),
    bd: BDSettings | None = None,
) -> EvalReport:
    """Each codec's rows averaged into a curve, every curve's BD-rate against every anchor
    (``bd``: default settings when None), and all rows labelled with their codec. The model
    curves are also compared with the classical codecs measured in the same run (the same
    images, PSNR on the same 8-bit output), the comparison a new model is judged by first."""
    bd = bd or BDSettings()
    curves = [curve_of(m) for m in measured]
    classical = [c for c in curves if c.kind == "classical"]
    models = [c for c in curves if c.kind != "classical"]
    return EvalReport(
        curves,
        list(anchors),
        bd_rate_table(curves, anchors, bd.metrics, bd.method)
        + bd_rate_table(models, classical, bd.metrics, bd.method),
        [{"codec": m.name, **row} for m in measured for row in m.rows],
        {m.name: m.stem for m in measured if m.stem},
    )


def write_rd(
    report: EvalReport,
    out_dir: str | PathLike,
    bd: BDSettings | None = None,
    max_bpp: float | None = None,
    title: str = "",
) -> dict[str, Path]:
    """Write ``results/<curve>.json`` (CompressAI's format), ``per_image.csv|json`` (when
    there are rows), ``rd.png`` and ``bd_rate.md|json`` (the table is logged too)."""
    out = Path(out_dir)
    files = {
        c.name: write_curve(c, out / "results" / f"{report.stems.get(c.name) or slug(c.name)}.json")
        for c in report.curves
    }
    if report.rows:
        files["per_image_csv"], files["per_image_json"] = write_rows(report.rows, out / "per_image")
    files["plot"] = rd_plot([*report.anchors, *report.curves], out / "rd.png", max_bpp, title)
    files |= write_bd_rates(report.bd_rates, out, bd or BDSettings())
    report.files, report.output_dir = files, out
    return files


def _log_table(curve: RDCurve) -> None:
    """A model curve's points as a table in the log, for runs read without the files."""
    log.info("%s:", curve.name)
    log.info("  %8s %8s %8s %10s %9s %8s %8s", "λ idx", "bpp", "PSNR", "MS-SSIM dB", "overhead",
             "enc s", "dec s")  # fmt: skip
    r = curve.results
    for i in range(len(r["bpp"])):
        idx = r["lmbda_idx"][i]
        log.info(
            "  %8s %8.4f %8.3f %10.3f %8.2f%% %8.3f %8.3f",
            "-" if idx is None else f"{idx:g}",
            r["bpp"][i],
            r["psnr-rgb"][i],
            r["ms-ssim-rgb-db"][i],
            100 * r["entropy-coding-overhead"][i],
            r["encoding_time"][i],
            r["decoding_time"][i],
        )


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Track]:
    """A rich progress bar as a :data:`~.measure.Track` (one bar per codec)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), disable=not enabled) as progress:
        yield lambda label, total: partial(progress.advance, progress.add_task(label, total=total))


def evaluate_with(
    cfg: DictConfig,
    images: Sequence[InputImage],
    out_dir: str | PathLike,
    checkpoints: Sequence[Path] = (),
    classical: Sequence[ClassicalCodec] = (),
    anchors: Sequence[RDCurve] = (),
    name: str | None = None,
) -> EvalReport:
    """The evaluation with ``cfg``'s settings (λ grid, device, threads, BD-rate, plot) on the
    given codecs and images, the model curve named ``name`` (default: after the checkpoints):
    what ``study=rd`` and the summary of a sweep both run."""
    bd, settings = BDSettings.from_config(cfg.get("bd_rate")), RDSettings.from_config(cfg)
    measured: list[Measured] = []
    enabled = bool(cfg.get("progress", True))
    with torch_threads(cfg.get("num_threads")), progress_bar(enabled) as track:
        source = str(cfg.test_dir)
        if checkpoints:
            measured.append(measure_checkpoints(checkpoints, images, settings, name, source, track))
        measured += [measure_classical(codec, images, track, source) for codec in classical]
    report = summarise_rd(measured, anchors, bd)
    title = f"{cfg.get('task_name', 'eval')}: {len(images)} images of {Path(cfg.test_dir).name}"
    write_rd(report, out_dir, bd, (cfg.get("plot") or {}).get("max_bpp"), title)
    for curve in report.curves:
        if curve.kind == "model":
            _log_table(curve)
    return report


def evaluate(cfg: DictConfig) -> EvalReport:
    """The Hydra adapter of ``study=rd``: check the config's inputs, evaluate, send to the
    configured loggers."""
    checkpoints = checkpoint_paths(cfg.get("checkpoint"))
    anchors = resolve_anchors(
        cfg.get("anchors") or [], cfg.paths.anchors_dir, cfg.get("extra_anchors") or []
    )
    classical = codecs_from_config(cfg.get("classical"))
    if not checkpoints and not classical:
        raise EvalError("nothing to evaluate: set checkpoint=PATH (or a list) or classical codecs")
    BDSettings.from_config(cfg.get("bd_rate"))  # an unknown method fails before any coding
    images = load_test_images(cfg.test_dir, cfg.get("max_images"))
    out = Path(cfg.paths.output_dir)
    log.info("evaluating on %d images from %s; outputs in %s", len(images), cfg.test_dir, out)
    report = evaluate_with(cfg, images, out, checkpoints, classical, anchors, cfg.get("name"))
    send_to_loggers(cfg.get("logger"), report.curves, report.bd_rates, report.files["plot"])
    log.info("results: %s", out)
    return report
