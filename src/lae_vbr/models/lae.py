"""The Latent-domain Auto-Encoder (LAE) of the TCSVT 2025 paper.

``LAE(y, λ) = y ⊙ m`` with ``m = exp(softsign(f_λ(λ) + α·ctx(y)))``. The mask lies in
(1/e, e), so ``log m ∈ (−1, 1)``: scaling a latent by m before unit quantisation adds about
log₂ m bits to it, which is the paper's logarithmic R-λ model. ``f_λ`` ends in a zero layer and
α starts at 0, so a freshly built LAE is exactly the identity.

The λ index is one number per image, or a map of indices at the latent's resolution (one per
latent position: region-of-interest coding). ``f_λ`` is evaluated once per distinct index and
looked up, so a constant map gives bit for bit the mask of its one index.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvTransBlock
from .rate import RateError, is_rate_map

__all__ = ["LambdaEmbedding", "LatentMask", "LAE"]


class LambdaEmbedding(nn.Module):
    """f_λ: an MLP from the scalar λ index to one value per latent channel."""

    def __init__(self, num_layers: int, channels: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("the λ embedding needs at least one layer")
        dims = [1] + [channels] * num_layers
        self.fc_layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        nn.init.zeros_(self.fc_layers[-1].weight)
        nn.init.zeros_(self.fc_layers[-1].bias)

    def forward(self, lmbda_idx: Tensor) -> Tensor:
        """One row of channel values per element of ``lmbda_idx``: shape (…, channels).

        The MLP runs once per distinct index (then a lookup): the same index gives the same
        bits whatever else the batch or map holds, and a map of a few quantised levels costs a
        few rows."""
        values, inverse = torch.unique(lmbda_idx, return_inverse=True)
        h = values.reshape(-1, 1)
        for i, layer in enumerate(self.fc_layers):
            h = layer(h)
            if i < len(self.fc_layers) - 1:
                h = F.relu(h)
        return h[inverse]


class LatentMask(nn.Module):
    """Pre-activation of the mask: f_λ(λ) broadcast over space, plus α·ctx(y).

    ``contextual=False`` removes the contextual branch (the "no context" ablation); the
    parameters stay so that checkpoints keep one layout, but they are frozen (α at zero) and
    the branch is never evaluated.
    """

    def __init__(
        self,
        channels: int,
        num_layers: int = 2,
        contextual: bool = True,
        head_dim: int = 32,
        window_size: int = 4,
    ) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"LAE channels must be even, got {channels}")
        self.channels = channels
        self.contextual = contextual
        self.lmd_map = LambdaEmbedding(num_layers, channels)
        self.latent_attn = ConvTransBlock(
            channels // 2, channels // 2, head_dim, window_size, 0.0, "SW"
        )
        self.alpha = nn.Parameter(torch.zeros(1), requires_grad=contextual)
        # Unused weights must not ask for gradients (DDP would wait for them).
        self.latent_attn.requires_grad_(contextual)

    def context(self, y: Tensor) -> Tensor | None:
        """α·ctx(y), the part that depends on the latent and not on λ (None without the
        contextual branch): computed once, it serves every λ index of one latent."""
        return self.alpha * self.latent_attn(y) if self.contextual else None

    def embedding(self, y: Tensor, lmbda_idx: Tensor) -> Tensor:
        """f_λ as a map to add to the latent: (B, C, 1, 1) for one index per image, (B, C, h, w)
        for a λ-index map (B, 1, h, w), which must cover y's positions one to one."""
        if not is_rate_map(lmbda_idx):
            return self.lmd_map(lmbda_idx.reshape(-1)).reshape(-1, self.channels, 1, 1)
        if lmbda_idx.shape[-2:] != y.shape[-2:]:
            raise RateError(
                f"the λ-index map is {tuple(lmbda_idx.shape[-2:])} but the latent is "
                f"{tuple(y.shape[-2:])}; give one index per latent position"
            )
        return self.lmd_map(lmbda_idx[:, 0]).permute(0, 3, 1, 2)

    def forward(self, y: Tensor, lmbda_idx: Tensor, context: Tensor | None = None) -> Tensor:
        """``lmbda_idx``: (B,) or a map (B, 1, h, w); ``context``: :meth:`context` of ``y``,
        when already computed."""
        emb = self.embedding(y, lmbda_idx)
        if not self.contextual:
            return emb.expand(torch.broadcast_shapes(emb.shape, y.shape))
        return emb + (self.context(y) if context is None else context)


class LAE(nn.Module):
    """Channel/space-wise rescaling of a latent by a λ-dependent mask in (1/e, e)."""

    def __init__(self, channels: int, num_layers: int = 2, contextual: bool = True) -> None:
        super().__init__()
        self.mask = LatentMask(channels, num_layers, contextual)

    def log_mask(self, y: Tensor, lmbda_idx: Tensor, context: Tensor | None = None) -> Tensor:
        """Natural log of the mask, softsign(·) ∈ (−1, 1); cheap, no entropy coding.
        ``context``: ``self.mask.context(y)``, to evaluate many λ indices of one latent."""
        return F.softsign(self.mask(y, lmbda_idx, context))

    def forward(
        self, y: Tensor, lmbda_idx: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(y ⊙ m, m)``."""
        m = torch.exp(self.log_mask(y, lmbda_idx, context))
        return y * m, m
