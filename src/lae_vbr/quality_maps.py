"""Random λ-index maps for training region-of-interest coding (Song et al., ICCV 2021).

A model trained only on one λ index per image has never seen neighbouring latents coded at
different rates, so a quality map at coding time asks for something outside its training. As in
Song et al. (micmic123/QmapCompression), training can instead draw one map per image, at the
latent's resolution, from a few kinds:

* ``uniform``: one trained λ index everywhere (exactly the plain λ-sampled training);
* ``gradient``: a linear ramp between two indices in a random direction;
* ``boxes``: a background index with one to three boxes at other indices;
* ``blobs``: a background index with one to three Gaussian blobs rising to other indices.

The loss then weights each pixel's squared error by the λ that the map assigns to it
(:class:`~lae_vbr.losses.RateDistortionLoss`), so the trade-off follows the map. Turned on by
``loss.quality_maps`` (``conf/loss/rd_quality_maps.yaml``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["MAP_KINDS", "QualityMapSampler"]

#: Default share of each kind of map (uniform maps keep the trained points as well covered).
DEFAULT_KINDS = {"uniform": 0.5, "gradient": 0.2, "boxes": 0.15, "blobs": 0.15}


def _uniform(shape: tuple[int, int], top: int, g: torch.Generator) -> Tensor:
    index = torch.randint(top + 1, (1,), generator=g).float()
    return index.expand(shape).clone()


def _gradient(shape: tuple[int, int], top: int, g: torch.Generator) -> Tensor:
    height, width = shape
    start, end = (torch.rand(2, generator=g) * top).unbind()
    angle = float(torch.rand(1, generator=g)) * 2 * math.pi
    rows = torch.linspace(-0.5, 0.5, height).reshape(-1, 1)
    cols = torch.linspace(-0.5, 0.5, width).reshape(1, -1)
    along = rows * math.sin(angle) + cols * math.cos(angle)
    span = (along.max() - along.min()).clamp_min(1e-6)
    ramp = (along - along.min()) / span
    return start + (end - start) * ramp


def _boxes(shape: tuple[int, int], top: int, g: torch.Generator) -> Tensor:
    height, width = shape
    out = torch.full(shape, float(torch.rand(1, generator=g)) * top)
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        box_h = int(torch.randint(1, height + 1, (1,), generator=g))
        box_w = int(torch.randint(1, width + 1, (1,), generator=g))
        top_row = int(torch.randint(height - box_h + 1, (1,), generator=g))
        left = int(torch.randint(width - box_w + 1, (1,), generator=g))
        value = float(torch.rand(1, generator=g)) * top
        out[top_row : top_row + box_h, left : left + box_w] = value
    return out


def _blobs(shape: tuple[int, int], top: int, g: torch.Generator) -> Tensor:
    height, width = shape
    out = torch.full(shape, float(torch.rand(1, generator=g)) * top)
    rows = torch.arange(height).reshape(-1, 1).float()
    cols = torch.arange(width).reshape(1, -1).float()
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        centre_r = float(torch.rand(1, generator=g)) * height
        centre_c = float(torch.rand(1, generator=g)) * width
        radius = 0.5 + float(torch.rand(1, generator=g)) * max(height, width) / 3
        bump = torch.exp(-((rows - centre_r) ** 2 + (cols - centre_c) ** 2) / (2 * radius**2))
        peak = float(torch.rand(1, generator=g)) * top
        out = out + (peak - out) * bump
    return out


#: name → f(latent shape, highest index, generator) → one (h, w) map in [0, highest].
MAP_KINDS: dict[str, Callable[[tuple[int, int], int, torch.Generator], Tensor]] = {
    "uniform": _uniform,
    "gradient": _gradient,
    "boxes": _boxes,
    "blobs": _blobs,
}


class QualityMapSampler:
    """Draws one λ-index map per image from the kinds in ``kinds`` (name → share).

    Args:
        kinds: the share of each kind (:data:`MAP_KINDS`), normalised; default
            :data:`DEFAULT_KINDS`.
        seed: seeds the sampler's own generator (None: from torch's global one), so map
            sampling does not shift the data order or the model's initialisation.
    """

    def __init__(self, kinds: Mapping[str, float] | None = None, seed: int | None = None) -> None:
        kinds = dict(DEFAULT_KINDS if kinds is None else kinds)
        unknown = sorted(set(kinds) - set(MAP_KINDS))
        if unknown:
            raise ValueError(
                f"unknown quality-map kinds {unknown}; choose from {sorted(MAP_KINDS)}"
            )
        shares = [float(v) for v in kinds.values()]
        if not shares or any(not math.isfinite(v) or v < 0 for v in shares) or sum(shares) <= 0:
            raise ValueError(f"quality-map shares must be non-negative, summing above 0: {kinds}")
        self.names = list(kinds)
        self.shares = torch.tensor(shares) / sum(shares)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(torch.randint(2**62, (1,))) if seed is None else int(seed))

    def __call__(self, batch: int, latent_shape: tuple[int, int], num_lmbdas: int) -> Tensor:
        """``batch`` maps, (batch, 1, h, w) float32 in [0, num_lmbdas − 1]."""
        top = num_lmbdas - 1
        picks = torch.multinomial(self.shares, batch, replacement=True, generator=self.generator)
        maps = [
            MAP_KINDS[self.names[int(k)]](tuple(latent_shape), top, self.generator) for k in picks
        ]
        return torch.stack(maps).unsqueeze(1).clamp_(0, top).float()
