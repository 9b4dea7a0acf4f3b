"""Encoder-side latent refinement (the paper's DLM): better latents for a frozen decoder.

The latents y (after the encoder-side LAE) and z are made free variables and moved by gradient
descent on the image's own rate-distortion loss ``bpp + 255²·λ·MSE``, computed through the
frozen latent codec and decoder path (decoder-side LAE, ``g_s``); the best (y, z) seen are
entropy coded. Only the encoder changes, so the file is decoded by the normal decoder. It works
on every composed codec (TCM, CompressAI backbones, with or without LAEs).

Rounding inside the latent codec gets a straight-through gradient here (its
``straight_through`` mode), so the loss is the rate of the values actually coded (not a noisy
proxy), its gradient still reaches the latents, and "keep the best step" compares exact values.

Two schedules (:class:`RefineSchedule`): the reference's, 20 plain SGD steps in float32
(:meth:`RefineSchedule.reference`: step size 800 × 0.99ⁿ, halved when the loss rises), and the
default: the same rule with half the steps, a first step 2.5 times as long that decays faster
(2000 × 0.95ⁿ), a restart from the midpoint of the last two iterates after each rise of the
loss (``midpoint_on_rise``; the reference goes on from the worse iterate), and the decoder
path in bfloat16 where the hardware computes it natively. On Kodak, where the CPU has native
bfloat16, it gets 101 % of the reference's loss reduction (more at both λs measured) in 0.28
of its time; where it has not, the steps run in float32 and take about half of the time
(``experiments/dlm``). Without the midpoint restart, 11 such steps got 98 %.
Gradient-normalised steps with Nesterov momentum stay available (``normalize``, ``momentum``):
they suited a small TCM but overshot on the bundled mean-scale hyperprior, whose loss doubled
after a first normalised step at low λ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lae_vbr.heap import freed_maps_returned, release_freed_memory
from lae_vbr.losses import RateDistortionLoss
from lae_vbr.models.analysis import LatentAnalysis
from lae_vbr.models.composed import LearnedCodec
from lae_vbr.models.rate import value_of_index

from .container import Bitstream
from .errors import RateError
from .image_codec import ImageCodec

__all__ = [
    "KODAK_PIXELS",
    "OnStep",
    "RefineResult",
    "RefineSchedule",
    "native_bfloat16",
    "refine_encode",
    "refine_latents",
    "refinement_loss",
]

#: Progress callback: ``on_step(step, steps)`` after each evaluated step (0 = unrefined).
OnStep = Callable[[int, int], None]

#: Image size (768×512) the reference step size was chosen for.
KODAK_PIXELS = 768 * 512
#: ``RefineSchedule.precision`` values.
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class RefineSchedule:
    """How the latents are optimised; the defaults are the fast schedule.

    At most ``steps`` gradient steps on (y, z) with step size ``lr`` (× ``decay`` after every
    step, × ``backoff`` again when the loss rose), stopping early once the loss changes by less
    than ``min_change`` (relative) between steps. With ``normalize`` = q the gradient of each
    of y and z is divided by the q-quantile of its magnitude, so a step moves the latents
    alike whatever the image, its size and λ (the q-th largest element by ``lr``); ``None``
    takes plain gradient steps, whose ``lr`` is for a Kodak-sized image (the reference's
    setting) and is scaled by ``pixels / KODAK_PIXELS`` for other sizes, since the per-pixel
    loss gives each latent element a gradient that shrinks as images grow. ``momentum``
    (Nesterov) carries part of the previous steps into each step.

    With ``midpoint_on_rise``, the step after a rise of the loss starts from the midpoint of
    the last two iterates, with the mean of their gradients (the midpoint's own gradient if
    the loss is quadratic along the segment), instead of from the worse iterate. Plain SGD at
    these step sizes zigzags across a narrow valley of the loss, the loss rising every other
    step; the midpoint lies near the valley's floor, and it costs no extra evaluation. The
    reference goes on from the worse iterate (``midpoint_on_rise=False``).

    ``precision`` is that of the decoder path (decoder-side LAE and ``g_s``, most of a step's
    time) inside the loss: ``"bfloat16"`` runs it under autocast (about 1.7× faster steps on a
    CPU with AVX512-BF16, the same loss reduction), ``"float32"`` does not, ``"auto"`` takes
    bfloat16 where the device computes it natively (:func:`native_bfloat16`). The entropy
    model (the rate) is always float32 and the file is coded as without refinement; the
    losses recorded are those computed, so with bfloat16 their distortion is that of the
    bfloat16 decoder path (within a few 0.1 % of float32's).
    """

    steps: int = 10
    lr: float = 2000.0
    decay: float = 0.95
    momentum: float = 0.0
    normalize: float | None = None
    backoff: float = 0.5
    min_change: float = 0.0
    precision: str = "auto"
    midpoint_on_rise: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refinement steps must be ≥ 0, got {self.steps}")
        if not (self.lr > 0 and 0 < self.decay <= 1 and self.min_change >= 0):
            raise ValueError("refinement needs lr > 0, 0 < decay ≤ 1 and min_change ≥ 0")
        if not (0 <= self.momentum < 1 and 0 < self.backoff <= 1):
            raise ValueError("refinement needs 0 ≤ momentum < 1 and 0 < backoff ≤ 1")
        if self.normalize is not None and not 0 < self.normalize <= 1:
            raise ValueError(f"normalize is a quantile in (0, 1], got {self.normalize}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def reference(cls, steps: int = 20) -> RefineSchedule:
        """The reference's schedule: plain SGD, step size 800 × 0.99ⁿ, halved when the loss
        rose, stopping when it changes by less than 10⁻⁵ (for studies and comparisons)."""
        return cls(steps, 800.0, 0.99, 0.0, None, 0.5, 1e-5, "float32", False)

    def step_size(self, pixels: int) -> float:
        """The first step size for an image of ``pixels`` pixels (see the class doc)."""
        return self.lr if self.normalize is not None else self.lr * pixels / KODAK_PIXELS

    def bfloat16_on(self, device: torch.device) -> bool:
        """Whether the decoder path runs in bfloat16 on ``device``."""
        return self.precision == "bfloat16" or (
            self.precision == "auto" and native_bfloat16(device)
        )


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU of compute capability 8 or
    more, or a CPU with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, slower than
    float32."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


@dataclass
class RefineResult:
    """The best latents found and the loss after each evaluation (index 0: unrefined)."""

    y: Tensor
    z: Tensor
    losses: list[float] = field(default_factory=list)
    best_step: int = 0
    seconds: float = 0.0


def refinable(model: LearnedCodec) -> LearnedCodec:
    """``model`` if latent refinement can run on it (asked of the model); RateError otherwise."""
    if not model.can_refine:
        raise RateError(
            f"latent refinement needs a model built as g_a → latent codec → g_s; "
            f"{type(model).__name__} codes inside its own model (e.g. the gain-based peer)"
        )
    return model


def refine_latents(
    model: LearnedCodec,
    x: Tensor,
    lmbda: float,
    lmbda_idx: float | None = None,
    schedule: RefineSchedule | None = None,
    on_step: OnStep | None = None,
    analysis: LatentAnalysis | None = None,
) -> RefineResult:
    """Optimise (y, z) of one image ``x`` (1, 3, H, W) for ``bpp + 255²·lmbda·MSE``.

    y is the latent after the encoder-side LAE at ``lmbda_idx`` (None: a fixed-rate model);
    the loss runs through the frozen latent codec (straight-through rounding), decoder-side
    LAE and ``g_s``. Weights are not touched. ``on_step`` reports progress (a long image
    takes seconds per step on a CPU); ``analysis``: the model's analysis of ``x``, when the
    caller has it (rate control refines at several indices of one analysis).
    """
    schedule = schedule or RefineSchedule()
    start = time.perf_counter()
    bfloat16 = schedule.bfloat16_on(x.device)
    y, z, loss_at = refinement_loss(model, x, lmbda, lmbda_idx, bfloat16, analysis)
    with _frozen(model):
        lr = schedule.step_size(x.shape[-2] * x.shape[-1])
        result = _descend(loss_at, y, z, schedule, lr, on_step)
    result.seconds = time.perf_counter() - start
    return result


def refinement_loss(
    model: LearnedCodec,
    x: Tensor,
    lmbda: float,
    lmbda_idx: float | None = None,
    bfloat16: bool = False,
    analysis: LatentAnalysis | None = None,
) -> tuple[Tensor, Tensor, Callable[[Tensor, Tensor], Tensor]]:
    """The unrefined latents (y, z) of ``x`` and the loss that refinement minimises, as a
    function of them: ``bpp + 255²·lmbda·MSE`` through the latent codec (straight-through
    rounding) and the decoder path, the latter under bfloat16 autocast if ``bfloat16``."""
    analysis = analysis if analysis is not None else refinable(model).analyse(x)
    loss_fn = RateDistortionLoss([lmbda]).to(x.device)
    y, z = analysis.refinement_start(lmbda_idx)

    def loss_at(y: Tensor, z: Tensor) -> Tensor:
        decoded = analysis.decode_relaxed(y, z, lmbda_idx, bfloat16)
        return loss_fn({**decoded, "x_hat": decoded["x_hat"].to(x.dtype)}, x)["loss"]

    return y, z, loss_at


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The weights without ``requires_grad`` for the duration: the backward pass then computes
    only the gradients of the latents, and the forward keeps less for it (about 10 % of a
    step). The flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _descend(
    loss_at: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    z: Tensor,
    schedule: RefineSchedule,
    lr: float,
    on_step: OnStep | None = None,
) -> RefineResult:
    """Gradient descent on (y, z) by ``schedule``, keeping the best step. The loss after the
    last step is evaluated without a graph (nothing is differentiated there)."""
    result = RefineResult(y.detach().clone(), z.detach().clone())
    best = float("inf")
    velocity: list[Tensor] | None = None
    origin: tuple[list[Tensor], list[Tensor]] | None = None  # last step's start, its gradient
    for step in range(schedule.steps + 1):
        last = step == schedule.steps
        y, z = y.detach().requires_grad_(not last), z.detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            loss = loss_at(y, z)
        value = float(loss.detach())
        if value < best:
            best, result.best_step = value, step
            result.y, result.z = y.detach().clone(), z.detach().clone()
        previous = result.losses[-1] if result.losses else None
        result.losses.append(value)
        if on_step is not None:
            on_step(step, schedule.steps)
        if last:
            break
        if previous is not None and _settled(previous, value, schedule.min_change):
            break
        rose = previous is not None and value > previous
        if rose:
            lr *= schedule.backoff
        points, grads = [y.detach(), z.detach()], list(torch.autograd.grad(loss, (y, z)))
        if rose and schedule.midpoint_on_rise and origin is not None:
            points, grads = _midpoint(origin, (points, grads))
        origin = points, grads
        directions, velocity = _directions(grads, velocity, schedule)
        y, z = (t - lr * d for t, d in zip(points, directions, strict=True))
        lr *= schedule.decay
    return result


def _settled(previous: float, value: float, min_change: float) -> bool:
    """Whether the loss changed by at most ``min_change`` (relative; 0: never settled)."""
    return bool(min_change) and abs(previous - value) <= min_change * abs(previous)


def _midpoint(
    a: tuple[list[Tensor], list[Tensor]], b: tuple[list[Tensor], list[Tensor]]
) -> tuple[list[Tensor], list[Tensor]]:
    """The midpoint of two iterates (points, gradients) and the mean of their gradients."""
    points, grads = (
        [(u + v) / 2 for u, v in zip(first, second, strict=True)]
        for first, second in zip(a, b, strict=True)
    )
    return points, grads


def _directions(
    grads: Sequence[Tensor], velocity: list[Tensor] | None, schedule: RefineSchedule
) -> tuple[list[Tensor], list[Tensor] | None]:
    """The step directions (normalised gradients, with Nesterov momentum) and the velocity."""
    directions = [
        g if schedule.normalize is None else g / _quantile_of_magnitude(g, schedule.normalize)
        for g in grads
    ]
    if not schedule.momentum:
        return directions, None
    m = schedule.momentum
    velocity = (
        directions
        if velocity is None
        else [m * v + d for v, d in zip(velocity, directions, strict=True)]
    )
    return [d + m * v for d, v in zip(directions, velocity, strict=True)], velocity


def _quantile_of_magnitude(g: Tensor, q: float) -> Tensor:
    """The q-quantile of ``|g|`` (the k-th smallest value, exact), never below 1e-30."""
    flat = g.detach().abs().flatten()
    k = min(flat.numel(), max(1, math.ceil(q * flat.numel())))
    return flat.kthvalue(k).values.clamp_min(1e-30)


def refine_encode(
    codec: ImageCodec,
    x: Tensor,
    lmbda_idx: float | None,
    schedule: RefineSchedule | None = None,
    lmbda: float | None = None,
    on_step: OnStep | None = None,
    analysis: LatentAnalysis | None = None,
) -> tuple[Bitstream, RefineResult]:
    """Code one image with refined latents; the file decodes with the normal decoder.

    ``lmbda_idx`` as for :meth:`ImageCodec.encode`; the loss uses the λ of that index
    (log-linear between trained values). A fixed-rate model uses its trained λ, or ``lmbda``
    when given (required for reference state dicts, which do not record it). ``analysis``:
    the model's analysis of ``x`` when the caller has one (rate control).
    """
    x = codec.check_image(x)
    lmbda_idx = codec.check_rate(lmbda_idx)
    model = refinable(codec.model)
    if lmbda is None:
        if not codec.rate_axis.recorded:
            raise RateError(
                f"model {codec.id} does not record the λ it was trained for; give lmbda"
            )
        lmbda = value_of_index(codec.lmbdas, 0.0 if lmbda_idx is None else lmbda_idx)
    x = x.to(codec.device)
    analysis = analysis if analysis is not None else model.analyse(x)
    result = refine_latents(model, x, lmbda, lmbda_idx, schedule, on_step, analysis)
    # the descent's freed maps, kept, would add the coding's peak to theirs: at 2048×2048 on
    # TCM-VBR N=64 the coding raised the peak from 4.21 to 5.45 GB with them kept, and not at
    # all (4.25 GB) with them released (experiments/bench/probe_refine_phases.py); and the
    # coding's own large maps, kept, would spread over the freed range (freed_maps_returned)
    release_freed_memory()
    with freed_maps_returned():
        encoding = analysis.compress(lmbda_idx, codec.arithmetic, latents=(result.y, result.z))
    return codec.pack(encoding, lmbda_idx), result
