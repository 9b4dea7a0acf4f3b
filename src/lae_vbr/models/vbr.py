"""Variable-rate coding by composition: LAEs around any CompressAI-style backbone.

:class:`VariableRateCodec` owns a fixed-rate backbone (anything with ``g_a`` and ``g_s``
modules, e.g. TCM or CompressAI's zoo models) and two LAEs. It does not copy the backbone's
forward/compress/decompress: forward hooks rescale the output of ``g_a`` (encoder-side LAE) and
the input of ``g_s`` (decoder-side LAE) with the λ of the current call. Outside a
``VariableRateCodec`` call the backbone behaves exactly as the fixed-rate model.

The checkpoint layout is flat, as in the reference ``TCM_VBR``: backbone keys unprefixed
(``g_a.0.conv1.weight``) next to ``modnet_ga.*`` / ``modnet_gs.*``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from compressai.models import CompressionModel
from torch import Tensor, nn

from .lae import LAE
from .state_dict import register_entropy_buffer_resizing
from .tcm import TCM

__all__ = ["VariableRateCodec", "TCMVBR", "as_lambda_tensor"]

_BACKBONE = "backbone."


def as_lambda_tensor(lmbda_idx: float | Sequence[float] | Tensor, batch: int, device) -> Tensor:
    """λ index (scalar or one per sample) as a float tensor of shape (batch, 1)."""
    t = torch.as_tensor(lmbda_idx, dtype=torch.float32, device=device).reshape(-1, 1)
    if t.shape[0] == 1 and batch != 1:
        t = t.expand(batch, 1)
    if t.shape[0] != batch:
        raise ValueError(f"got {t.shape[0]} λ indices for a batch of {batch}")
    return t


class VariableRateCodec(CompressionModel):
    """A fixed-rate backbone made variable-rate by an encoder-side and a decoder-side LAE.

    Args:
        backbone: the fixed-rate codec (must expose ``g_a`` and ``g_s``).
        latent_channels: channels of y (M).
        num_lmbdas: size of the trained λ set; valid λ indices are [0, num_lmbdas − 1].
        encoder_lae, decoder_lae: build the LAE after ``g_a`` / before ``g_s``.
        contextual: keep the contextual branch (α·ctx(y)) of the LAE masks.
        lae_layers: depth of the λ embedding MLP.
    """

    def __init__(
        self,
        backbone: nn.Module,
        latent_channels: int,
        num_lmbdas: int = 6,
        encoder_lae: bool = True,
        decoder_lae: bool = True,
        contextual: bool = True,
        lae_layers: int = 2,
    ) -> None:
        super().__init__()
        if not (hasattr(backbone, "g_a") and hasattr(backbone, "g_s")):
            raise TypeError(f"{type(backbone).__name__} has no g_a/g_s transforms to wrap")
        if num_lmbdas < 2:
            raise ValueError(
                f"a variable-rate model needs at least 2 λ values, got {num_lmbdas}; "
                "train a fixed-rate model for a single λ"
            )
        self.backbone = backbone
        self.num_lmbdas = num_lmbdas
        self.latent_channels = latent_channels
        self.modnet_ga = LAE(latent_channels, lae_layers, contextual) if encoder_lae else None
        self.modnet_gs = LAE(latent_channels, lae_layers, contextual) if decoder_lae else None
        self._lmbda: Tensor | None = None
        self._encoder_mask: Tensor | None = None
        self._latent: Tensor | None = None
        backbone.g_a.register_forward_hook(self._after_analysis)
        backbone.g_s.register_forward_pre_hook(self._before_synthesis)
        self.register_state_dict_post_hook(_flatten_backbone_keys)
        self.register_load_state_dict_pre_hook(_nest_backbone_keys)
        register_entropy_buffer_resizing(backbone)

    # -- hooks ------------------------------------------------------------------------
    def _after_analysis(self, module: nn.Module, args: Any, y: Tensor) -> Tensor | None:
        if self._lmbda is None:
            return None
        if self.modnet_ga is not None:
            y, self._encoder_mask = self.modnet_ga(y, self._lmbda)
        self._latent = y
        return y

    def _before_synthesis(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._lmbda is None or self.modnet_gs is None:
            return None
        y_hat, _ = self.modnet_gs(args[0], self._lmbda)
        return (y_hat, *args[1:])

    @contextmanager
    def conditioned(
        self, lmbda_idx: float | Sequence[float] | Tensor, batch: int
    ) -> Iterator[Tensor]:
        """Run the backbone with its LAEs set to ``lmbda_idx`` (validated against the λ set)."""
        lmbda = as_lambda_tensor(lmbda_idx, batch, self._device())
        self.check_lambda_index(lmbda)
        self._lmbda, self._encoder_mask, self._latent = lmbda, None, None
        try:
            yield lmbda
        finally:
            self._lmbda = None

    def check_lambda_index(self, lmbda: Tensor) -> None:
        hi = self.num_lmbdas - 1
        if not torch.isfinite(lmbda).all() or (lmbda < 0).any() or (lmbda > hi).any():
            bad = lmbda[~(torch.isfinite(lmbda) & (lmbda >= 0) & (lmbda <= hi))][0].item()
            raise ValueError(f"λ index {bad} is outside the trained range [0, {hi}]")

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # -- CompressAI API -----------------------------------------------------------------
    def forward(self, x: Tensor, lmbda_idx: float | Sequence[float] | Tensor) -> dict:
        with self.conditioned(lmbda_idx, x.shape[0]) as lmbda:
            out = dict(self.backbone(x))
            out["y"] = self._latent
        out["lmbda_idx"] = lmbda.reshape(-1)
        return out

    def compress(self, x: Tensor, lmbda_idx: float | Sequence[float] | Tensor) -> dict:
        with self.conditioned(lmbda_idx, x.shape[0]) as lmbda:
            out = dict(self.backbone.compress(x))
            mask = self._encoder_mask
        out["lmbda_idx"] = lmbda.reshape(-1)
        if mask is not None:
            # mean log-mask of the encoder LAE: the quantity of the R-λ model.
            out["log_mask_mean"] = mask.log().mean(dim=(1, 2, 3))
        return out

    def decompress(
        self,
        strings: Sequence[Sequence[bytes]],
        shape: Sequence[int],
        lmbda_idx: float | Sequence[float] | Tensor,
        **kwargs: Any,
    ) -> dict:
        with self.conditioned(lmbda_idx, len(strings[0])):
            return dict(self.backbone.decompress(strings, shape, **kwargs))

    # -- R-λ model ------------------------------------------------------------------------
    @torch.no_grad()
    def log2_mask_sum(self, y: Tensor, lmbda_idx: float | Sequence[float] | Tensor) -> Tensor:
        """Σ log₂ m over the latent for each image, from the raw analysis output ``y``.

        Costs one LAE evaluation (no entropy coding), so it can be swept over many λ.
        """
        if self.modnet_ga is None:
            raise RuntimeError("the R-λ model needs the encoder-side LAE")
        lmbda = as_lambda_tensor(lmbda_idx, y.shape[0], y.device)
        self.check_lambda_index(lmbda)
        return self.modnet_ga.log_mask(y, lmbda).sum(dim=(1, 2, 3)) / math.log(2)

    def analysis(self, x: Tensor) -> Tensor:
        """The backbone's raw analysis transform (no LAE); the caller pads ``x`` if needed."""
        return self.backbone.g_a(x)


def _flatten_backbone_keys(
    module: nn.Module, state_dict: dict, prefix: str, local_metadata
) -> None:
    inner = prefix + _BACKBONE
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _nest_backbone_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    own = ("modnet_ga.", "modnet_gs.", _BACKBONE)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if not rest.startswith(own):
            state_dict[prefix + _BACKBONE + rest] = state_dict.pop(key)


class TCMVBR(VariableRateCodec):
    """TCM with the paper's LAEs (the reference ``TCM_VBR``); extra kwargs go to :class:`TCM`."""

    def __init__(
        self,
        N: int = 64,
        M: int = 320,
        num_lmbdas: int = 6,
        encoder_lae: bool = True,
        decoder_lae: bool = True,
        contextual: bool = True,
        lae_layers: int = 2,
        **tcm_kwargs: Any,
    ) -> None:
        super().__init__(
            TCM(N=N, M=M, **tcm_kwargs),
            latent_channels=M,
            num_lmbdas=num_lmbdas,
            encoder_lae=encoder_lae,
            decoder_lae=decoder_lae,
            contextual=contextual,
            lae_layers=lae_layers,
        )
