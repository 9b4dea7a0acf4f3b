"""Measuring a learned codec on one image: real bitstream, reconstruction, likelihood bits.

Images go through the same path as the command-line codec (``lae_vbr.codec``): encoded to a
file in memory, parsed back and decoded. The rate is what the entropy coder actually wrote (the
y and z strings, the convention of published results), with the whole file's size (header and
checksum included) beside it, and not the likelihood estimate used in training; the estimate is
kept too so the entropy-coding overhead (real / estimated − 1) can be checked point by point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lae_vbr.codec.container import Bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.models.registry import LoadedCodec

from .results import EvalError

__all__ = ["CodedImage", "OperatingPoint", "code_image", "lambda_grid", "operating_points"]


@dataclass(frozen=True)
class OperatingPoint:
    """Where a codec is run: a λ index for variable-rate models, none for fixed-rate ones."""

    lmbda_idx: float | None
    lmbda: float | None  # the trained λ value when known (integer index or fixed-rate config)


@dataclass
class CodedImage:
    x_hat: Tensor
    bits: int  # the entropy-coded y and z strings
    file_bits: int  # the whole file: strings, header and checksum
    bits_estimated: float  # Σ −log₂ likelihood of y and z
    encoding_time: float
    decoding_time: float


def lambda_grid(num_lmbdas: int, grid: Sequence[float] | None, step: float) -> list[float]:
    """The λ indices to run: ``grid`` if given (checked), else 0, step, 2·step, … up to the
    last trained index (always included)."""
    hi = num_lmbdas - 1
    if grid:
        values = sorted({float(v) for v in grid})
        bad = [v for v in values if not (0 <= v <= hi)]
        if bad:
            raise EvalError(f"λ indices {bad} are outside the trained range [0, {hi}]")
        return values
    if not step or step <= 0:
        raise EvalError(f"lmbda_step must be positive, got {step}")
    count = math.floor(hi / step + 1e-9)
    values = [round(i * step, 6) for i in range(count + 1)]
    return values if values[-1] == hi else [*values, float(hi)]


def operating_points(
    codec: LoadedCodec, grid: Sequence[float] | None, step: float
) -> list[OperatingPoint]:
    """A variable-rate model's λ grid, or the single point of a fixed-rate model."""
    if not codec.rate_axis.variable:
        # project checkpoints store the trained λ first; reference state dicts do not say
        return [OperatingPoint(None, codec.lmbdas[0] if codec.config else None)]
    indices = lambda_grid(len(codec.lmbdas), grid, step)
    return [
        OperatingPoint(i, codec.lmbdas[int(i)] if float(i).is_integer() else None) for i in indices
    ]


def _no_sync() -> None:
    return None


def code_image(
    codec: ImageCodec,
    x: Tensor,
    point: OperatingPoint,
    sync: Callable[[], None] = _no_sync,
    refine_steps: int = 0,
) -> CodedImage:
    """Code one image ``x`` (1, 3, H, W) in [0, 1] into a file in memory (with
    ``refine_steps`` of latent refinement when positive) and decode the file, as the CLI
    does, then run the likelihood pass of the unrefined latents at the same λ index."""
    sync()
    start = time.perf_counter()
    if refine_steps:
        from lae_vbr.codec.refine import RefineSchedule, refine_encode

        stream = refine_encode(codec, x, point.lmbda_idx, RefineSchedule(steps=refine_steps))[0]
    else:
        with torch.inference_mode():
            stream = codec.encode(x, point.lmbda_idx)
    data = stream.to_bytes()
    sync()
    with torch.inference_mode():
        return _decoded(codec, x, data, start, time.perf_counter(), sync)


def _decoded(
    codec: ImageCodec, x: Tensor, data: bytes, start: float, encoded: float, sync: Callable
) -> CodedImage:
    """The file decoded and measured (``start``/``encoded``: the encode's clock)."""
    stream = Bitstream.from_bytes(data)
    x_hat = codec.decode(stream)
    sync()
    decoded = time.perf_counter()
    args = () if stream.lmbda_idx is None else (stream.lmbda_idx,)
    likelihoods = codec.model(x, *args)["likelihoods"]
    return CodedImage(
        x_hat=x_hat,
        bits=8 * (len(stream.y_string) + len(stream.z_string)),
        file_bits=8 * len(data),
        bits_estimated=sum(float(-torch.log2(v).sum()) for v in likelihoods.values()),
        encoding_time=encoded - start,
        decoding_time=decoded - encoded,
    )
