"""Encoder-side latent refinement (the paper's DLM): better latents for a frozen decoder.

The latents y (after the encoder-side LAE) and z are made free variables and moved by plain
gradient descent on the image's own rate-distortion loss ``bpp + 255²·λ·MSE``, computed
through the frozen entropy model and decoder path (``forward_latent``); the best (y, z) seen
are entropy coded. Only the encoder changes, so the file is decoded by the normal decoder.

Rounding inside the entropy models gets a straight-through gradient here, so the loss is the
rate of the values actually coded (not a noisy proxy), its gradient still reaches the latents,
and "keep the best step" compares exact values.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
from compressai.entropy_models import EntropyModel
from torch import Tensor, nn

from lae_vbr.losses import RateDistortionLoss
from lae_vbr.models.padding import crop_image, pad_image
from lae_vbr.models.vbr import VariableRateCodec

from .api import ImageCodec, ImageError, RateError, index_to_lmbda, pad_multiple
from .container import Bitstream, to_float32

__all__ = ["KODAK_PIXELS", "RefineResult", "RefineSchedule", "refine_encode", "refine_latents"]

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


def _ste_quantize(
    module: EntropyModel, inputs: Tensor, mode: str, means: Tensor | None = None
) -> Tensor:
    out = type(module).quantize(module, inputs, mode, means)
    if mode != "dequantize":
        return out
    return inputs + (out - inputs).detach()


@contextmanager
def straight_through_rounding(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Inside, eval-mode CompressAI entropy models round with an identity gradient."""
    patched = [m for m in modules if isinstance(m, EntropyModel)]
    for m in patched:
        m.quantize = partial(_ste_quantize, m)
    try:
        yield
    finally:
        for m in patched:
            del m.quantize


def _backbone(model: nn.Module) -> nn.Module:
    return model.backbone if isinstance(model, VariableRateCodec) else model


def refine_latents(
    model: nn.Module,
    x: Tensor,
    lmbda: float,
    lmbda_idx: float | None = None,
    schedule: RefineSchedule | None = None,
) -> RefineResult:
    """Optimise (y, z) of one image ``x`` (1, 3, H, W) for ``bpp + 255²·lmbda·MSE``.

    ``model`` is a TCM-style codec (``g_a``, ``h_a``, ``forward_latent``) or a variable-rate
    codec around one, then coded at ``lmbda_idx``. Weights are not touched.
    """
    schedule = schedule or RefineSchedule()
    if isinstance(model, VariableRateCodec) and lmbda_idx is None:
        raise RateError("refining for a variable-rate model needs its λ index")
    backbone = _backbone(model)
    height, width = x.shape[-2:]
    loss_fn = RateDistortionLoss([lmbda]).to(x.device)
    context = model.conditioned(lmbda_idx, 1) if isinstance(model, VariableRateCodec) else None
    start = time.perf_counter()
    with context or nullcontext(), straight_through_rounding(backbone.modules()):
        with torch.no_grad():
            y = backbone.g_a(pad_image(x, pad_multiple(model)))  # after the encoder LAE
            z = backbone.h_a(y)

        def loss_at(y: Tensor, z: Tensor) -> Tensor:
            out = backbone.forward_latent(y, z)
            out["x_hat"] = crop_image(out["x_hat"], height, width).clamp(0, 1)
            return loss_fn(out, x)["loss"]

        result = RefineResult(y.detach().clone(), z.detach().clone())
        lr = schedule.lr * height * width / KODAK_PIXELS
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
    result.seconds = time.perf_counter() - start
    return result


def refine_encode(
    codec: ImageCodec,
    x: Tensor,
    lmbda_idx: float | None,
    schedule: RefineSchedule | None = None,
    lmbda: float | None = None,
) -> tuple[Bitstream, RefineResult]:
    """Code one image with refined latents; the file decodes with the normal decoder.

    ``lmbda_idx`` as for :meth:`ImageCodec.encode`; the loss uses the λ of that index
    (log-linear between trained values). A fixed-rate model uses its trained λ, or ``lmbda``
    when given (required for reference state dicts, which do not record it).
    """
    x = x.unsqueeze(0) if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
        raise ImageError(f"expected one float RGB image (1, 3, H, W), got {tuple(x.shape)}")
    if codec.variable_rate:
        if lmbda_idx is None:
            raise RateError(f"model {codec.id} is variable-rate: λ index required")
        lmbda_idx = to_float32(codec.rate_index(quality=lmbda_idx))
        lmbda = index_to_lmbda(codec.lmbdas, lmbda_idx) if lmbda is None else lmbda
    elif lmbda_idx is not None:
        raise RateError(f"model {codec.id} is fixed-rate: λ index not accepted")
    elif lmbda is None:
        if not codec.loaded.config:
            raise RateError(
                f"model {codec.id} does not record the λ it was trained for; give lmbda"
            )
        lmbda = codec.lmbdas[0]
    model = codec.model
    x = x.to(next(model.parameters()).device)
    result = refine_latents(model, x, lmbda, lmbda_idx, schedule)
    context = model.conditioned(lmbda_idx, 1) if codec.variable_rate else nullcontext()
    with torch.inference_mode(), context:
        encoding = _backbone(model).compress_latent(result.y, result.z)
    encoding["image_size"] = tuple(x.shape[-2:])
    return codec.pack(encoding, lmbda_idx), result
