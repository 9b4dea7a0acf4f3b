"""Measuring codecs for R-D curves: one row per (operating point, image), then the curve.

A learned codec is measured at its operating points (:func:`measure_model`), a classical one
over its quality sweep (:func:`measure_classical`); both give rows with the same rate, quality
and time keys, so :func:`curve_of` averages any codec's rows into an :class:`RDCurve` alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.data.tensors import image_to_tensor
from lae_vbr.paths import portable_path, portable_paths

from .classical import ClassicalCodec
from .coding import OperatingPoint, code_image, operating_points
from .inputs import InputImage, open_codec, resolve_device
from .metrics import average_by, image_metrics, summarize, to_8bit
from .provenance import codec_meta, curve_name, dataset_meta, merge_meta, run_meta
from .results import RDCurve, curve_from_points

__all__ = [
    "Measured",
    "RDSettings",
    "Track",
    "curve_of",
    "measure_checkpoints",
    "measure_classical",
    "measure_model",
    "no_progress",
]

log = logging.getLogger(__name__)

#: Progress reporting: called with a label and a number of steps, returns "one step done".
Track = Callable[[str, int], Callable[[], None]]

#: The row keys that make one R-D point of each kind of codec.
_POINT_KEYS = {"model": ("checkpoint", "lmbda_idx", "lmbda"), "classical": ("quality",)}


def _nothing() -> None:
    return None


def no_progress(label: str, total: int) -> Callable[[], None]:
    """The default :data:`Track`: report nothing."""
    return _nothing


@dataclass(frozen=True)
class RDSettings:
    """Where and how learned codecs are measured (the keys of the same names in eval.yaml)."""

    lmbda_grid: tuple[float, ...] | None = None  # λ indices; None: every lmbda_step
    lmbda_step: float = 0.5
    device: str = "auto"
    warmup: bool = True  # code one image first so one-off initialisation is not timed
    #: encoder-side latent refinement (DLM) with the default schedule and this many steps;
    #: 0: plain encoding. The decoder is unchanged.
    refine_steps: int = 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RDSettings:
        """The settings from an eval config (``conf/eval.yaml``)."""
        grid = cfg.get("lmbda_grid")
        return cls(
            tuple(float(v) for v in grid) if grid else None,
            float(cfg.lmbda_step),
            str(cfg.get("device", "auto")),
            bool(cfg.get("warmup", True)),
            int(cfg.get("refine_steps") or 0),
        )


@dataclass
class Measured:
    """One codec's per-image rows with what its curve is called, described and filed as."""

    name: str
    description: str
    kind: str  # "model" or "classical"
    rows: list[dict[str, Any]]
    stem: str = ""  # results/<stem>.json; the curve name made file-safe when empty
    meta: dict[str, Any] = field(default_factory=dict)  # the results file's meta block


def _row(
    image: InputImage,
    point: Mapping[str, Any],
    bits: int,
    extra: Mapping[str, Any],
    decoded: Tensor,
    times: tuple[float, float],
) -> dict[str, Any]:
    """The row of one decoded image: where it was coded, its rate, quality and times."""
    height, width = image.pixels.shape[:2]
    return {
        **point,
        "image": image.name,
        "height": height,
        "width": width,
        "bits": bits,
        "bpp": bits / image.num_pixels,
        **extra,
        **image_metrics(to_8bit(image.x), decoded),
        "encoding_time": times[0],
        "decoding_time": times[1],
    }


def _overhead(real: float, estimated: float) -> float:
    return real / estimated - 1 if estimated > 0 else math.nan


def measure_model(
    codec: ImageCodec,
    images: Sequence[InputImage],
    points: Sequence[OperatingPoint],
    warmup: bool = True,
    advance: Callable[[], None] = _nothing,
    refine_steps: int = 0,
) -> list[dict[str, Any]]:
    """Code every image at every point through the file format (with ``refine_steps`` of
    latent refinement when positive); one row per (point, image) with the real rate (y+z
    strings and whole file), the likelihood estimate, quality, times."""
    device = next(codec.model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else _nothing
    if warmup:  # the first call is slow (lazy init); keep it out of the timings
        code_image(codec, images[0].x.to(device), points[0], sync, refine_steps)
    rows = []
    for point in points:
        for image in images:
            coded = code_image(codec, image.x.to(device), point, sync, refine_steps)
            pixels = image.num_pixels
            extra = {
                "bits_file": coded.file_bits,
                "bpp_file": coded.file_bits / pixels,
                "bits_estimated": coded.bits_estimated,
                "bpp_estimated": coded.bits_estimated / pixels,
                "entropy_coding_overhead": _overhead(coded.bits, coded.bits_estimated),
            }
            where = {"lmbda_idx": point.lmbda_idx, "lmbda": point.lmbda}
            times = (coded.encoding_time, coded.decoding_time)
            rows.append(_row(image, where, coded.bits, extra, to_8bit(coded.x_hat.cpu()), times))
            advance()
        done = summarize(rows[-len(images) :])  # a line per point for non-interactive logs
        at = "fixed rate" if point.lmbda_idx is None else f"λ index {point.lmbda_idx:g}"
        log.info("%s, %s: %.4f bpp, %.2f dB", codec.loaded.name, at, done["bpp"], done["psnr-rgb"])
    return rows


def measure_checkpoints(
    paths: Sequence[Path],
    images: Sequence[InputImage],
    settings: RDSettings = RDSettings(),
    name: str | None = None,
    source: str = "",
    track: Track = no_progress,
) -> Measured:
    """Every checkpoint at its operating points as one model curve (a list of fixed-rate
    checkpoints gives one point each), named ``name`` or CompressAI's ``<arch>-<metric>``;
    ``source`` (where the images come from) goes into the description and ``meta``. Paths are
    written portable (:func:`~lae_vbr.paths.portable_paths`): results files are shared."""
    device = resolve_device(settings.device)
    labels = portable_paths(paths)
    rows, names, metas = [], [], []
    for path, label in zip(paths, labels, strict=True):
        codec = open_codec(path, device)
        points = operating_points(codec.loaded, settings.lmbda_grid, settings.lmbda_step)
        names.append(curve_name(codec.loaded))
        metas.append(codec_meta(codec, label))
        advance = track(f"{codec.loaded.name} ({path.name})", len(points) * len(images))
        measured = measure_model(
            codec, images, points, settings.warmup, advance, settings.refine_steps
        )
        rows += [{"checkpoint": label, **row} for row in measured]
        del codec
    description = (
        f"lae-vbr eval of {', '.join(labels)} on {len(images)} images of "
        f"{portable_path(source) if source else 'memory'}; bpp: the entropy-coded y+z strings; "
        "bpp-file: the whole file (header and checksum included); psnr-rgb: mean per-image PSNR "
        "on 8-bit RGB; psnr-rgb-mean-mse: PSNR of the mean MSE; times on "
        f"{device.type} with {torch.get_num_threads()} CPU threads"
    )
    if settings.refine_steps:
        description += f"; latents refined before coding (DLM, {settings.refine_steps} steps)"
    meta = {**merge_meta(metas), **dataset_meta(source, len(images), device), **run_meta()}
    name = name or "+".join(dict.fromkeys(names))
    return Measured(name, description, "model", rows, meta=meta)


def measure_classical(
    codec: ClassicalCodec,
    images: Sequence[InputImage],
    track: Track = no_progress,
    source: str = "",
) -> Measured:
    """Encode and decode every image at every quality of ``codec`` in memory (``source``:
    where the images come from, for ``meta``)."""
    advance = track(codec.name, len(codec.qualities) * len(images))
    rows = []
    for quality in codec.qualities:
        for image in images:
            decoded, nbytes, enc_t, dec_t = codec.roundtrip(image.pixels, quality)
            reconstruction = to_8bit(image_to_tensor(decoded))
            point = {"quality": int(quality)}
            rows.append(_row(image, point, 8 * nbytes, {}, reconstruction, (enc_t, dec_t)))
            advance()
    log.info("%s: %d qualities measured", codec.name, len(codec.qualities))
    meta = {
        "type": "image",
        "model.source": "classical",
        "model.name": codec.key,
        **dataset_meta(source, len(images), torch.device("cpu")),
        **run_meta(),
    }
    return Measured(codec.name, codec.description(), "classical", rows, codec.key, meta)


def curve_of(measured: Measured) -> RDCurve:
    """The R-D curve of measured rows: per operating point, the dataset averages
    (:func:`~lae_vbr.evaluation.metrics.summarize`), sorted by bpp."""
    points = average_by(measured.rows, _POINT_KEYS[measured.kind])
    for point in points:
        point.pop("checkpoint", None)  # groups a list of checkpoints; not a curve value
    return curve_from_points(
        measured.name, measured.description, points, measured.kind, measured.meta
    )
