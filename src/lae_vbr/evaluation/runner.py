"""One evaluation run: codecs × operating points × test images → results, plot, BD-rate, logs.

Everything cheap is checked before any coding starts (checkpoint files, anchors, test images,
classical codecs, BD-rate method), so bad input fails in a second with a one-line message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.data import list_images, load_rgb_image
from lae_vbr.models.registry import load_codec
from lae_vbr.models.state_dict import CheckpointError

from .bdrate import METHODS, BDResult, bd_rate_table, to_json, to_markdown
from .classical import ClassicalCodec, codecs_from_config
from .coding import code_image, operating_points
from .loggers import send_to_loggers
from .metrics import image_metrics, summarize, to_8bit
from .plots import rd_plot
from .results import EvalError, RDCurve, curve_from_points, resolve_anchors, slug, write_curve
from .results import write_rows as write_rows_files

__all__ = ["EvalReport", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """What a run produced: measured curves (model first), anchors, BD-rates, written files."""

    output_dir: Path
    curves: list[RDCurve]
    anchors: list[RDCurve]
    bd_rates: list[BDResult]
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class _TestImage:
    name: str
    pixels: np.ndarray  # H×W×3 uint8

    def tensor(self) -> torch.Tensor:
        """(1, 3, H, W) float in [0, 1]."""
        return _to_tensor(self.pixels).div(255)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → (1, 3, H, W) float with values 0..255 (a contiguous copy)."""
    return torch.tensor(pixels).permute(2, 0, 1)[None].float().contiguous()


def _load_images(folder: str | PathLike, limit: int | None) -> list[_TestImage]:
    paths = list_images(folder)
    return [_TestImage(p.name, load_rgb_image(p)) for p in (paths[:limit] if limit else paths)]


def _checkpoints(value: Any) -> list[Path]:
    """``checkpoint`` as one path or a list of paths; each must exist."""
    if not value:
        items = []
    elif isinstance(value, str | PathLike):
        items = [value]
    else:
        items = list(value)
    paths = [Path(str(p)).expanduser() for p in items]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
    return paths


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Use ``count`` CPU threads inside (torch's default when None), then restore."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def _measure_model(
    paths: Sequence[Path], images: Sequence[_TestImage], cfg: DictConfig, progress: Progress
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-image rows of every checkpoint's operating points, and the checkpoints' names."""
    device = _device(str(cfg.get("device", "auto")))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows, names = [], []
    for path in paths:
        loaded = load_codec(path, map_location=device)
        points = operating_points(loaded, cfg.get("lmbda_grid"), float(cfg.lmbda_step))
        codec = ImageCodec(loaded)
        names.append(loaded.name)
        task = progress.add_task(f"{loaded.name} ({path.name})", total=len(points) * len(images))
        if cfg.get("warmup", True):  # the first call is slow (lazy init); keep it out of timings
            code_image(codec, images[0].tensor().to(device), points[0], sync)
        for point in points:
            for image in images:
                coded = code_image(codec, image.tensor().to(device), point, sync)
                reference = _to_tensor(image.pixels)
                pixels = image.pixels.shape[0] * image.pixels.shape[1]
                rows.append(
                    {
                        "checkpoint": str(path),
                        "lmbda_idx": point.lmbda_idx,
                        "lmbda": point.lmbda,
                        "image": image.name,
                        "height": image.pixels.shape[0],
                        "width": image.pixels.shape[1],
                        "bits": coded.bits,
                        "bpp": coded.bits / pixels,
                        "bits_file": coded.file_bits,
                        "bpp_file": coded.file_bits / pixels,
                        "bits_estimated": coded.bits_estimated,
                        "bpp_estimated": coded.bits_estimated / pixels,
                        "entropy_coding_overhead": _overhead(coded.bits, coded.bits_estimated),
                        **image_metrics(reference, to_8bit(coded.x_hat.cpu())),
                        "encoding_time": coded.encoding_time,
                        "decoding_time": coded.decoding_time,
                    }
                )
                progress.advance(task)
            done = summarize(rows[-len(images) :])  # a line per point for non-interactive logs
            where = "fixed rate" if point.lmbda_idx is None else f"λ index {point.lmbda_idx:g}"
            log.info("%s, %s: %.4f bpp, %.2f dB", loaded.name, where, done["bpp"], done["psnr-rgb"])
        del codec, loaded
    return rows, names


def _overhead(real: float, estimated: float) -> float:
    return real / estimated - 1 if estimated > 0 else math.nan


def _measure_classical(
    codec: ClassicalCodec, images: Sequence[_TestImage], progress: Progress
) -> list[dict[str, Any]]:
    task = progress.add_task(codec.name, total=len(codec.qualities) * len(images))
    rows = []
    for quality in codec.qualities:
        for image in images:
            decoded, nbytes, enc_t, dec_t = codec.roundtrip(image.pixels, quality)
            pixels = image.pixels.shape[0] * image.pixels.shape[1]
            rows.append(
                {
                    "quality": int(quality),
                    "image": image.name,
                    "height": image.pixels.shape[0],
                    "width": image.pixels.shape[1],
                    "bits": 8 * nbytes,
                    "bpp": 8 * nbytes / pixels,
                    **image_metrics(_to_tensor(image.pixels), _to_tensor(decoded)),
                    "encoding_time": enc_t,
                    "decoding_time": dec_t,
                }
            )
            progress.advance(task)
    log.info("%s: %d qualities measured", codec.name, len(codec.qualities))
    return rows


def _points(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Group rows by ``keys`` (in first-seen order) and average each group."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return [
        {**summarize(group), **dict(zip(keys, key, strict=True))} for key, group in groups.items()
    ]


def _curve_name(cfg: DictConfig, names: Sequence[str]) -> str:
    return str(cfg.get("name") or "+".join(dict.fromkeys(names)))


def _log_table(curve: RDCurve) -> None:
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


def evaluate(cfg: DictConfig) -> EvalReport:
    """Run the configured evaluation and write its outputs under ``cfg.paths.output_dir``."""
    checkpoints = _checkpoints(cfg.get("checkpoint"))
    anchors = resolve_anchors(
        cfg.get("anchors") or [], cfg.paths.anchors_dir, cfg.get("extra_anchors") or []
    )
    classical = codecs_from_config(cfg.get("classical"))
    if not checkpoints and not classical:
        raise EvalError("nothing to evaluate: set checkpoint=PATH (or a list) or classical codecs")
    bd_cfg = cfg.get("bd_rate") or {}
    method = str(bd_cfg.get("method", "akima"))
    if method not in METHODS:
        raise EvalError(f"unknown bd_rate.method '{method}' (choose from {', '.join(METHODS)})")
    images = _load_images(cfg.test_dir, cfg.get("max_images"))
    out = Path(cfg.paths.output_dir)
    log.info("evaluating on %d images from %s; outputs in %s", len(images), cfg.test_dir, out)

    report = EvalReport(out, [], anchors, [])
    threads = cfg.get("num_threads")
    with _torch_threads(threads), _progress(bool(cfg.get("progress", True))) as progress:
        if checkpoints:
            rows, names = _measure_model(checkpoints, images, cfg, progress)
            name = _curve_name(cfg, names)
            description = (
                f"lae-vbr eval of {', '.join(str(p) for p in checkpoints)} on {len(images)} "
                f"images of {cfg.test_dir}; bpp: the entropy-coded y+z strings; bpp-file: the "
                "whole file (header and checksum included); psnr-rgb: mean per-image PSNR on "
                "8-bit RGB; psnr-rgb-mean-mse: PSNR of the mean MSE; times on "
                f"{_device(str(cfg.get('device', 'auto'))).type} with {torch.get_num_threads()} "
                "CPU threads"
            )
            points = _points(rows, ["checkpoint", "lmbda_idx", "lmbda"])
            for p in points:
                del p["checkpoint"]
            curve = curve_from_points(name, description, points, "model")
            report.files[name] = write_curve(curve, out / "results" / f"{slug(name)}.json")
            report.curves.append(curve)
            report.rows += [{"codec": name, **r} for r in rows]
        for codec in classical:
            rows = _measure_classical(codec, images, progress)
            points = _points(rows, ["quality"])
            curve = curve_from_points(codec.name, codec.description(), points, "classical")
            report.files[codec.name] = write_curve(curve, out / "results" / f"{codec.key}.json")
            report.curves.append(curve)
            report.rows += [{"codec": codec.name, **r} for r in rows]

    report.files["per_image_csv"], report.files["per_image_json"] = write_rows_files(
        report.rows, out / "per_image"
    )
    plot_cfg = cfg.get("plot") or {}
    report.files["plot"] = rd_plot(
        [*anchors, *report.curves],
        out / "rd.png",
        max_bpp=plot_cfg.get("max_bpp"),
        title=f"{cfg.get('task_name', 'eval')}: {len(images)} images of {Path(cfg.test_dir).name}",
    )
    metrics = list(bd_cfg.get("metrics", ["psnr-rgb", "ms-ssim-rgb-db"]))
    report.bd_rates = bd_rate_table(report.curves, anchors, metrics, method)
    min_overlap = float(bd_cfg.get("min_overlap", 0.75))
    markdown = to_markdown(report.bd_rates, min_overlap)
    report.files["bd_rate_md"] = out / "bd_rate.md"
    report.files["bd_rate_md"].write_text(markdown)
    report.files["bd_rate_json"] = out / "bd_rate.json"
    report.files["bd_rate_json"].write_text(to_json(report.bd_rates, method, min_overlap))

    for curve in report.curves:
        if curve.kind == "model":
            _log_table(curve)
    log.info("\n%s", markdown)
    send_to_loggers(cfg.get("logger"), report.curves, report.bd_rates, report.files["plot"])
    log.info("results: %s", out)
    return report
