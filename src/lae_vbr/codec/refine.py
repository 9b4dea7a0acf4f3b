"""Encoder-side latent refinement (the paper's DLM): better latents for a frozen decoder.

The latents y (after the encoder-side LAE) and z are made free variables and moved by plain
gradient descent on the image's own rate-distortion loss ``bpp + 255²·λ·MSE``, computed
through the frozen latent codec and decoder path (decoder-side LAE, ``g_s``); the best (y, z)
seen are entropy coded. Only the encoder changes, so the file is decoded by the normal
decoder. It works on every composed codec (TCM, CompressAI backbones, with or without LAEs).

Rounding inside the latent codec gets a straight-through gradient here (its
``straight_through`` mode), so the loss is the rate of the values actually coded (not a noisy
proxy), its gradient still reaches the latents, and "keep the best step" compares exact values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lae_vbr.losses import RateDistortionLoss
from lae_vbr.models.composed import ComposedCodec
from lae_vbr.models.padding import crop_image, pad_image
from lae_vbr.models.rate import value_of_index

from .container import Bitstream
from .errors import RateError
from .image_codec import ImageCodec

__all__ = [
    "KODAK_PIXELS",
    "OnStep",
    "RefineResult",
    "RefineSchedule",
    "refine_encode",
    "refine_latents",
]

#: Progress callback: ``on_step(step, steps)`` after each evaluated step (0 = unrefined).
OnStep = Callable[[int, int], None]

#: Image size (768×512) the reference step size was chosen for.
KODAK_PIXELS = 768 * 512


@dataclass(frozen=True)
class RefineSchedule:
    """The optimiser schedule; the defaults are the reference's.

    SGD on (y, z) for at most ``steps`` steps with step size ``lr`` (× ``decay`` after every
    step, halved again when the loss rose), stopping early once the loss changes by less than
    ``min_change`` (relative) between steps. ``lr`` is the step size for a Kodak-sized image
    (the reference's setting); the loss is per pixel, so its gradient per latent element
    shrinks as images grow, and other sizes use ``lr × pixels / KODAK_PIXELS`` so that a step
    moves each latent element alike.
    """

    steps: int = 20
    lr: float = 800.0
    decay: float = 0.99
    min_change: float = 1e-5

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refinement steps must be ≥ 0, got {self.steps}")
        if not (self.lr > 0 and 0 < self.decay <= 1 and self.min_change >= 0):
            raise ValueError("refinement needs lr > 0, 0 < decay ≤ 1 and min_change ≥ 0")


@dataclass
class RefineResult:
    """The best latents found and the loss after each evaluation (index 0: unrefined)."""

    y: Tensor
    z: Tensor
    losses: list[float] = field(default_factory=list)
    best_step: int = 0
    seconds: float = 0.0


def refinable(model: object) -> ComposedCodec:
    """``model`` if latent refinement can run on it; RateError saying why not otherwise."""
    if not isinstance(model, ComposedCodec):
        raise RateError(
            f"latent refinement needs a model built as g_a → latent codec → g_s; "
            f"{type(model).__name__} codes inside its own model (e.g. the gain-based peer)"
        )
    return model


def refine_latents(
    model: ComposedCodec,
    x: Tensor,
    lmbda: float,
    lmbda_idx: float | None = None,
    schedule: RefineSchedule | None = None,
    on_step: OnStep | None = None,
) -> RefineResult:
    """Optimise (y, z) of one image ``x`` (1, 3, H, W) for ``bpp + 255²·lmbda·MSE``.

    y is the latent after the encoder-side LAE at ``lmbda_idx`` (None: a fixed-rate model);
    the loss runs through the frozen latent codec (straight-through rounding), decoder-side
    LAE and ``g_s``. Weights are not touched. ``on_step`` reports progress (a long image
    takes seconds per step on a CPU).
    """
    schedule = schedule or RefineSchedule()
    model = refinable(model)
    lmbdas = model.lmbda_input(lmbda_idx, 1)
    height, width = x.shape[-2:]
    loss_fn = RateDistortionLoss([lmbda]).to(x.device)
    start = time.perf_counter()
    with torch.no_grad():
        y, _ = model.analysis(pad_image(x, model.pad_multiple), lmbdas)
        z = model.latent_codec.hyper_analysis(y)

    def loss_at(y: Tensor, z: Tensor) -> Tensor:
        coded = model.latent_codec(y, z, straight_through=True)
        x_hat = crop_image(model.synthesis(coded["y_hat"], lmbdas), height, width).clamp(0, 1)
        return loss_fn({"x_hat": x_hat, "likelihoods": coded["likelihoods"]}, x)["loss"]

    lr = schedule.lr * height * width / KODAK_PIXELS
    result = _descend(loss_at, y, z, schedule, lr, on_step)
    result.seconds = time.perf_counter() - start
    return result


def _descend(
    loss_at: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    z: Tensor,
    schedule: RefineSchedule,
    lr: float,
    on_step: OnStep | None = None,
) -> RefineResult:
    """The reference's gradient descent on (y, z), keeping the best step."""
    result = RefineResult(y.detach().clone(), z.detach().clone())
    best = float("inf")
    for step in range(schedule.steps + 1):
        y.requires_grad_(True)
        z.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_at(y, z)
            value = float(loss.detach())
            if value < best:
                best, result.best_step = value, step
                result.y, result.z = y.detach().clone(), z.detach().clone()
            previous = result.losses[-1] if result.losses else None
            result.losses.append(value)
            if on_step is not None:
                on_step(step, schedule.steps)
            if step == schedule.steps:
                break
            if previous is not None:
                if abs(previous - value) <= schedule.min_change * abs(previous):
                    break
                if value > previous:
                    lr *= 0.5
            grad_y, grad_z = torch.autograd.grad(loss, (y, z))
        y = (y - lr * grad_y).detach()
        z = (z - lr * grad_z).detach()
        lr *= schedule.decay
    return result


def refine_encode(
    codec: ImageCodec,
    x: Tensor,
    lmbda_idx: float | None,
    schedule: RefineSchedule | None = None,
    lmbda: float | None = None,
    on_step: OnStep | None = None,
) -> tuple[Bitstream, RefineResult]:
    """Code one image with refined latents; the file decodes with the normal decoder.

    ``lmbda_idx`` as for :meth:`ImageCodec.encode`; the loss uses the λ of that index
    (log-linear between trained values). A fixed-rate model uses its trained λ, or ``lmbda``
    when given (required for reference state dicts, which do not record it).
    """
    x = codec.check_image(x)
    lmbda_idx = codec.check_rate(lmbda_idx)
    model = refinable(codec.model)
    if lmbda is None:
        if not codec.loaded.config and not codec.variable_rate:
            raise RateError(
                f"model {codec.id} does not record the λ it was trained for; give lmbda"
            )
        lmbda = value_of_index(codec.lmbdas, 0.0 if lmbda_idx is None else lmbda_idx)
    x = x.to(next(model.parameters()).device)
    result = refine_latents(model, x, lmbda, lmbda_idx, schedule, on_step)
    with torch.inference_mode():
        encoding = model.code_latent(result.y, result.z, codec.arithmetic)
    return codec.pack({**encoding, "shape": tuple(x.shape[-2:])}, lmbda_idx), result
