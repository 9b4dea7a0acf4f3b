"""Per-image quality metrics and their dataset averages.

Everything is measured on 8-bit RGB (values 0..255), as a decoder writing PNG files would
output it and as CompressAI measured the published anchors. Two dataset PSNRs exist and differ
(the mean of per-image PSNRs is at least the PSNR of the mean MSE, by Jensen's inequality); both
are reported so comparisons can use the same convention as the anchor: CompressAI's ``psnr-rgb``
is the mean of per-image PSNRs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lae_vbr.losses import MIN_MSSSIM_SIDE

__all__ = [
    "average_by",
    "image_metrics",
    "msssim_db",
    "psnr_from_mse_8bit",
    "summarize",
    "to_8bit",
]

_PEAK = 255.0


def to_8bit(x: Tensor) -> Tensor:
    """A [0, 1] reconstruction as the 8-bit image it would be saved as (float, 0..255)."""
    return (x.detach().float().clamp(0, 1) * _PEAK).round()


def msssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, −10·log10(1 − MS-SSIM), which spreads out the high-quality end."""
    if math.isnan(value):
        return math.nan
    return math.inf if value >= 1 else -10.0 * math.log10(1.0 - value)


def psnr_from_mse_8bit(mse: float) -> float:
    """PSNR (dB) of an MSE measured on 0..255 values, as a float; infinite when the MSE is 0.

    Not :func:`lae_vbr.losses.psnr_from_mse`, which takes a tensor on the [0, 1] scale and
    clamps the MSE for training logs: evaluation reports a lossless set as infinite PSNR,
    as torchmetrics does for one image.
    """
    return math.inf if mse <= 0 else 10.0 * math.log10(_PEAK * _PEAK / mse)


@torch.inference_mode()
def image_metrics(reference: Tensor, decoded: Tensor) -> dict[str, float]:
    """MSE, PSNR (dB) and MS-SSIM (linear and dB) of one 8-bit image pair, shape (1, 3, H, W)."""
    # imported on first use: torchmetrics loads torchvision (seconds), which a run that fails
    # on its inputs (a missing checkpoint, an unknown anchor) should not wait for
    from torchmetrics.functional import mean_squared_error
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure,
        peak_signal_noise_ratio,
    )

    ref, rec = reference.double().contiguous(), decoded.double().contiguous()
    mse = float(mean_squared_error(rec, ref))
    psnr = float(peak_signal_noise_ratio(rec, ref, data_range=_PEAK))
    if min(ref.shape[-2:]) >= MIN_MSSSIM_SIDE:  # smaller: NaN
        # float32: as exact as needed here, and about 9× faster than float64 on CPU
        ms_ssim = float(
            multiscale_structural_similarity_index_measure(
                rec.float(), ref.float(), data_range=_PEAK
            )
        )
    else:
        ms_ssim = math.nan
    return {"mse": mse, "psnr": psnr, "ms_ssim": ms_ssim, "ms_ssim_db": msssim_db(ms_ssim)}


def _mean(rows: Sequence[Mapping[str, float]], key: str) -> float:
    return float(np.mean([float(r[key]) for r in rows]))


def summarize(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Dataset averages of per-image rows in CompressAI's key names.

    ``bpp`` and times are means over images; ``psnr-rgb`` is the mean per-image PSNR and
    ``psnr-rgb-mean-mse`` the PSNR of the mean MSE; ``ms-ssim-rgb-db`` is the dB value of the
    mean MS-SSIM (how anchors' MS-SSIM is converted for plots). With file sizes present,
    ``bpp-file`` is the mean whole-file rate; with estimated bits, ``entropy-coding-overhead``
    is Σ real bits / Σ estimated bits − 1.
    """
    if not rows:
        raise ValueError("no rows to summarize")
    ms_ssim = _mean(rows, "ms_ssim")
    out = {
        "bpp": _mean(rows, "bpp"),
        "psnr-rgb": _mean(rows, "psnr"),
        "psnr-rgb-mean-mse": psnr_from_mse_8bit(_mean(rows, "mse")),
        "mse": _mean(rows, "mse"),
        "ms-ssim-rgb": ms_ssim,
        "ms-ssim-rgb-db": msssim_db(ms_ssim),
        "encoding_time": _mean(rows, "encoding_time"),
        "decoding_time": _mean(rows, "decoding_time"),
    }
    if all("bpp_file" in r for r in rows):
        out["bpp-file"] = _mean(rows, "bpp_file")
    if all("bits_estimated" in r for r in rows):
        real = sum(float(r["bits"]) for r in rows)
        estimated = sum(float(r["bits_estimated"]) for r in rows)
        out["bpp-estimated"] = _mean(rows, "bpp_estimated")
        out["entropy-coding-overhead"] = real / estimated - 1.0 if estimated > 0 else math.nan
    return out


def average_by(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """R-D points: rows grouped by ``keys`` (in first-seen order), each group summarized and
    labelled with its key values, so every codec's points are averaged the same way."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return [
        {**summarize(group), **dict(zip(keys, key, strict=True))} for key, group in groups.items()
    ]
