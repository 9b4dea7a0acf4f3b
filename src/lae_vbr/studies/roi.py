"""Region-of-interest study: the ROI sharper, at the same file size as uniform coding.

``python src/eval.py study=roi checkpoint=PATH test_dir=FOLDER [max_images=N]``

Each image gets two masks made from it deterministically (:func:`roi_masks`): a centred box
(the middle third of each side) and one saliency-like blob (an ellipse around the window of
highest local contrast). At each λ index of ``study.lmbda_grid`` the image is coded uniformly;
then, for each mask, coded with the region ``study.boost`` indices above a background that rate
control picks so that the file fits the uniform file's size (``encode_to_size``). Both files
are decoded through the file format, and the PSNR inside the mask and outside it compared: the
ROI should gain what the background loses, at the same size. With ``study.baseline_checkpoint``
the uniform curve is also compared with another model's (BD-rate, e.g. a retrained bundled model
against the current one).

From Python: ``rows = measure_roi(codec, images, grid, boost)``, ``summary = summarise_roi(rows)``,
``write_roi(summary, rows, out_dir, description)``; :func:`run` is the Hydra adapter.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from lae_vbr.codec.container import Bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.rate_control import RateControlWarning, encode_to_size
from lae_vbr.codec.regions import GrayImage, RoiRegion
from lae_vbr.data.tensors import tensor_to_uint8
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.files import markdown_table
from lae_vbr.evaluation.inputs import InputImage, torch_threads

from .common import study_inputs, write_record

__all__ = [
    "crop_picture",
    "measure_roi",
    "roi_at_size",
    "roi_masks",
    "run",
    "summarise_roi",
    "write_roi",
]

log = logging.getLogger(__name__)

MASK_KINDS = ("box", "blob")


def roi_masks(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The study's two masks of an image (H, W, 3 uint8), bool (H, W): ``box``, the middle third
    of each side; ``blob``, an ellipse (a quarter of each side across) centred on the window of
    highest mean gradient magnitude, a simple stand-in for a saliency map."""
    height, width = pixels.shape[:2]
    box = np.zeros((height, width), bool)
    box[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = True
    gray = pixels.astype(np.float64).mean(axis=2)
    gradient = np.hypot(*np.gradient(gray))
    win_h, win_w = max(1, height // 4), max(1, width // 4)
    sums = np.pad(gradient.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    window = (sums[win_h:, win_w:] - sums[:-win_h, win_w:] - sums[win_h:, :-win_w]
              + sums[:-win_h, :-win_w])  # fmt: skip
    top, left = np.unravel_index(np.argmax(window), window.shape)
    centre_r, centre_c = top + win_h / 2, left + win_w / 2
    rows, cols = np.ogrid[:height, :width]
    blob = ((rows - centre_r) / (win_h / 2 + 0.5)) ** 2 + (
        (cols - centre_c) / (win_w / 2 + 0.5)
    ) ** 2
    return {"box": box, "blob": blob <= 1.0}


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    diff = a[where].astype(np.float64) - b[where].astype(np.float64)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _decoded(codec: ImageCodec, stream: Bitstream) -> np.ndarray:
    x_hat = codec.decode(Bitstream.from_bytes(stream.to_bytes()))  # through the file format
    return tensor_to_uint8(x_hat[0].cpu())


def _row(image: InputImage, mask_kind: str, mask: np.ndarray, coding: str, stream: Bitstream,
         decoded: np.ndarray, idx: float) -> dict[str, Any]:  # fmt: skip
    return {
        "image": image.name,
        "mask": mask_kind,
        "roi_share": float(mask.mean()),
        "coding": coding,
        "lmbda_idx": idx,
        "bytes": stream.num_bytes,
        "bpp": stream.bpp,
        "map_bytes": len(stream.map_bytes),
        "psnr": _psnr(image.pixels, decoded, np.ones(mask.shape, bool)),
        "psnr_roi": _psnr(image.pixels, decoded, mask),
        "psnr_background": _psnr(image.pixels, decoded, ~mask),
    }


def roi_at_size(
    codec: ImageCodec, x: Any, mask: np.ndarray, max_bytes: int, boost: float
) -> Bitstream:
    """The image coded with ``mask`` ``boost`` indices above a background that rate control
    picks so that the file fits ``max_bytes`` (the nearest end, silently, when it cannot)."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    gray = GrayImage(mask.astype(np.uint8) * 255, "mask")
    region = RoiRegion.of(gray, size, codec.latent_shape(*size), boost, codec.max_index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateControlWarning)
        return encode_to_size(codec, x, max_bytes, region=region).stream  # type: ignore[return-value]


def measure_roi(
    codec: ImageCodec, images: Sequence[InputImage], grid: Sequence[float], boost: float
) -> list[dict[str, Any]]:
    """Rows of uniform and ROI coding per image, λ index and mask (see the module)."""
    rows = []
    for image in images:
        x = image.x.to(codec.device)
        masks = roi_masks(image.pixels)
        for idx in grid:
            uniform = codec.encode(x, idx)
            decoded = _decoded(codec, uniform)
            for kind, mask in masks.items():
                rows.append(_row(image, kind, mask, "uniform", uniform, decoded, idx))
                stream = roi_at_size(codec, x, mask, uniform.num_bytes, boost)
                roi_row = _row(image, kind, mask, "roi", stream, _decoded(codec, stream), idx)
                rows.append({**roi_row, "background_idx": stream.lmbda_idx})
        log.info("ROI study: %s done", image.name)
    return rows


def summarise_roi(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean PSNR gains (ROI coding − uniform) inside and outside the mask, and the size ratio,
    per mask kind and λ index, and over all."""
    pairs: dict[tuple[str, float], list[tuple[dict, dict]]] = {}
    uniform = {(r["image"], r["mask"], r["lmbda_idx"]): r for r in rows if r["coding"] == "uniform"}
    for r in rows:
        if r["coding"] == "roi":
            key = (r["mask"], r["lmbda_idx"])
            pairs.setdefault(key, []).append((uniform[r["image"], r["mask"], r["lmbda_idx"]], r))

    def stats(group: list[tuple[dict, dict]]) -> dict[str, float]:
        gains = {m: [roi[m] - uni[m] for uni, roi in group]
                 for m in ("psnr_roi", "psnr_background", "psnr")}  # fmt: skip
        return {
            "images": len(group),
            "roi_gain_db": float(np.mean(gains["psnr_roi"])),
            "roi_gain_min_db": float(np.min(gains["psnr_roi"])),
            "background_change_db": float(np.mean(gains["psnr_background"])),
            "whole_change_db": float(np.mean(gains["psnr"])),
            "size_ratio": float(np.mean([roi["bytes"] / uni["bytes"] for uni, roi in group])),
            "fits": float(np.mean([roi["bytes"] <= uni["bytes"] for uni, roi in group])),
            "roi_share": float(np.mean([roi["roi_share"] for _, roi in group])),
        }

    groups = [{"mask": k[0], "lmbda_idx": k[1], **stats(v)} for k, v in sorted(pairs.items())]
    by_mask = [{"mask": m, "lmbda_idx": "all",
                **stats([p for k, v in pairs.items() if k[0] == m for p in v])}
               for m in MASK_KINDS if any(k[0] == m for k in pairs)]  # fmt: skip
    return {"groups": groups + by_mask}


def _table(summary: dict[str, Any]) -> str:
    headers = ["mask", "λ index", "images", "ROI share", "ROI ΔPSNR (dB)", "ROI min (dB)",
               "background Δ (dB)", "whole Δ (dB)", "size / uniform", "fits"]  # fmt: skip
    rows = [
        [g["mask"], g["lmbda_idx"], g["images"], f"{g['roi_share']:.1%}",
         f"{g['roi_gain_db']:+.2f}", f"{g['roi_gain_min_db']:+.2f}",
         f"{g['background_change_db']:+.2f}", f"{g['whole_change_db']:+.2f}",
         f"{g['size_ratio']:.4f}", f"{g['fits']:.0%}"]
        for g in summary["groups"]
    ]  # fmt: skip
    return markdown_table(headers, rows)


def crop_picture(
    codec: ImageCodec, image: InputImage, idx: float, boost: float, path: Path
) -> Path:
    """A side-by-side crop around the box mask's region: original, uniform, ROI coding at the
    uniform file's size (labelled in the file name order, left to right)."""
    x = image.x.to(codec.device)
    mask = roi_masks(image.pixels)["box"]
    uniform = codec.encode(x, idx)
    roi = roi_at_size(codec, x, mask, uniform.num_bytes, boost)
    rows, cols = np.nonzero(mask)
    top, left = rows.min(), cols.min()
    crop = (slice(top, top + min(192, rows.max() - top + 1)),
            slice(left, left + min(256, cols.max() - left + 1)))  # fmt: skip
    panels = [image.pixels, _decoded(codec, uniform), _decoded(codec, roi)]
    gap = np.full((crop[0].stop - crop[0].start, 8, 3), 255, np.uint8)
    side_by_side = np.concatenate([p for panel in panels for p in (panel[crop], gap)][:-1], axis=1)
    Image.fromarray(side_by_side).save(path)
    return path


def write_roi(
    summary: dict[str, Any], rows: Sequence[dict[str, Any]], out_dir: Path, description: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, Path]:  # fmt: skip
    body = _table(summary)
    payload = {"summary": summary, "rows": list(rows)}
    title = "Region-of-interest coding at equal file size"
    return write_record(out_dir, "roi", title, description, body, payload, meta)


def _uniform_curve(codec: ImageCodec, images: Sequence[InputImage], grid: Sequence[float]) -> Any:
    """The R-D curve (mean file bpp, mean PSNR) of uniform coding over ``grid``."""
    from lae_vbr.evaluation import curve_from_points

    points = []
    for idx in grid:
        streams = [codec.encode(im.x.to(codec.device), idx) for im in images]
        psnrs = [_psnr(im.pixels, _decoded(codec, s), np.ones(im.pixels.shape[:2], bool))
                 for im, s in zip(images, streams, strict=True)]  # fmt: skip
        points.append({"bpp": float(np.mean([s.bpp for s in streams])),
                       "psnr-rgb": float(np.mean(psnrs))})  # fmt: skip
    return curve_from_points(str(codec.id), "uniform coding", points)


def _baseline_bd_rate(cfg: DictConfig, codec: ImageCodec, images: Sequence[InputImage],
                      grid: Sequence[float]) -> str:  # fmt: skip
    """BD-rate (PSNR) of the model's uniform coding against ``study.baseline_checkpoint``'s, on
    the same images and λ indices (empty without one)."""
    path = cfg.study.get("baseline_checkpoint")
    if not path:
        return ""
    from lae_vbr.evaluation import bd_rate
    from lae_vbr.evaluation.inputs import checkpoint_paths, open_codec

    (checkpoint,) = checkpoint_paths(path)
    baseline = open_codec(checkpoint, str(cfg.get("device", "auto")))
    result = bd_rate(_uniform_curve(baseline, images, grid), _uniform_curve(codec, images, grid))
    value = "n/a" if result.bd_rate is None else f"{result.bd_rate:+.2f} %"
    return f"; uniform coding against {path}: BD-rate {value} (PSNR)"


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=roi``: measure, summarise, write, and the crop picture."""
    inputs = study_inputs(cfg)
    codec = inputs.codec
    grid = list(lambda_grid(codec.max_index + 1, cfg.study.get("lmbda_grid"), 1.0))
    boost = float(cfg.study.boost)
    log.info("ROI study: %d images × %d λ indices × %d masks", len(inputs.images), len(grid),
             len(MASK_KINDS))  # fmt: skip
    with torch_threads(cfg.get("num_threads")) as threads:
        rows = measure_roi(codec, inputs.images, grid, boost)
        baseline = _baseline_bd_rate(cfg, codec, inputs.images, grid)
        picture = crop_picture(codec, inputs.images[0], grid[0], boost,
                               inputs.out_dir / "roi_crop.png")  # fmt: skip
    summary = summarise_roi(rows)
    description = (
        f"ROI study of {inputs.about}; ROI {boost:g} λ indices above a background found by "
        f"encode_to_size at the uniform file's size; masks: centred box (middle third of each "
        f"side) and one contrast blob per image; PSNR of 8-bit files inside and outside the mask; "
        f"{threads} CPU threads{baseline}; crop picture {picture.name} (original | uniform | ROI, "
        f"{inputs.images[0].name} at λ index {grid[0]:g})"
    )
    return write_roi(summary, rows, inputs.out_dir, description, inputs.meta)
