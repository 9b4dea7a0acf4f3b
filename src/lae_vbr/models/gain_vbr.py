"""A peer variable-rate method behind the same λ-index API: CompressAI's gain-based VBR models.

CompressAI's ``bmshj2018-hyperprior-vbr`` and ``mbt2018-mean-vbr`` (Kamisli, Racapé and Choi,
DCC 2024) set the rate with a gain that scales the latent before quantisation, plus learned
quantisation-reconstruction offsets. :class:`GainVariableRate` drives such a model with this
project's λ index, so it trains and evaluates with the same λ set, loss, checkpoints, codec files
and evaluation as the LAE: index i selects gain i; fractional indices interpolate the gains
log-linearly (CompressAI's continuous ``inputscale``). The models take one gain per call, so a
batch with several λ indices is coded group by group.

Gains start at CompressAI's values, √(λᵢ / λ_max), and stay fixed: CompressAI's training detaches
them, so here they are frozen (a parameter without gradients would also stall DDP).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from compressai.registry import MODELS
from torch import Tensor, nn

from .compressai_backbone import CompressAIBackbone
from .vbr import VariableRateCodec, as_lambda_tensor

__all__ = ["GainVariableRate"]

#: CompressAI's code path with the gain and offsets (stage 1 is the plain fixed-rate model).
_VBR_STAGE = 2


class GainVariableRate(VariableRateCodec):
    """A CompressAI ``*-vbr`` model whose rate is chosen by the λ index.

    Args:
        backbone: a :class:`CompressAIBackbone` holding a CompressAI variable-rate model.
        lmbdas: the trained λ set; one gain per value.
    """

    def __init__(self, backbone: CompressAIBackbone, lmbdas: Sequence[float]) -> None:
        if not (isinstance(backbone, CompressAIBackbone) and hasattr(backbone.model, "Gain")):
            raise TypeError("GainVariableRate needs a CompressAI variable-rate (-vbr) backbone")
        super().__init__(backbone, backbone.M, len(lmbdas), encoder_lae=False, decoder_lae=False)
        values = torch.tensor([float(v) for v in lmbdas])
        vbr = backbone.model
        vbr.lmbda = values.tolist()
        vbr.levels = len(values)
        vbr.Gain = nn.Parameter((values / values.max()).sqrt(), requires_grad=False)

    @classmethod
    def around(cls, backbone: nn.Module, lmbdas: Sequence[float]) -> GainVariableRate:
        """The ``-vbr`` sibling of a fixed-rate CompressAI backbone, same architecture args."""
        name = getattr(backbone, "architecture", None)
        if name is None or f"{name}-vbr" not in MODELS:
            peers = sorted(m[: -len("-vbr")] for m in MODELS if m.endswith("-vbr"))
            raise ValueError(
                f"the gain baseline exists for CompressAI's {', '.join(peers)} only, not for "
                f"{name or type(backbone).__name__}"
            )
        return cls(CompressAIBackbone(f"{name}-vbr", **backbone.kwargs), lmbdas)

    def gain(self, lmbda_idx: Tensor) -> Tensor:
        """Gain of a (possibly fractional) λ index: log-linear between the trained points."""
        gains = self.backbone.model.Gain.detach().abs()
        lo = lmbda_idx.floor().long().clamp(max=len(gains) - 2)
        frac = lmbda_idx - lo
        return torch.exp(gains[lo].log() * (1 - frac) + gains[lo + 1].log() * frac)

    def _rate_args(self, lmbda_idx: Tensor) -> dict[str, Any]:
        # Training uses Gain[s]; evaluation and coding use inputscale (any index).
        return {
            "stage": _VBR_STAGE,
            "s": int(lmbda_idx.round()),
            "inputscale": self.gain(lmbda_idx),
        }

    def _by_lambda(
        self, lmbda_idx: float | Sequence[float] | Tensor, batch: int, run: Callable
    ) -> tuple[Tensor, list[tuple[Tensor, dict]]]:
        """Run ``run(selection, rate_args)`` once per distinct λ index of the batch."""
        lmbda = as_lambda_tensor(lmbda_idx, batch, self._device()).reshape(-1)
        self.check_lambda_index(lmbda)
        groups = []
        for value in lmbda.unique():
            sel = (lmbda == value).nonzero().squeeze(1)
            groups.append((sel, run(sel, self._rate_args(value))))
        return lmbda, groups

    def forward(self, x: Tensor, lmbda_idx: float | Sequence[float] | Tensor) -> dict:
        lmbda, groups = self._by_lambda(
            lmbda_idx, x.shape[0], lambda sel, args: self.backbone(x[sel], **args)
        )
        order = torch.cat([sel for sel, _ in groups]).argsort()
        outs = [out for _, out in groups]
        return {
            "x_hat": torch.cat([o["x_hat"] for o in outs])[order],
            "likelihoods": {
                k: torch.cat([o["likelihoods"][k] for o in outs])[order]
                for k in outs[0]["likelihoods"]
            },
            "lmbda_idx": lmbda,
        }

    def compress(self, x: Tensor, lmbda_idx: float | Sequence[float] | Tensor) -> dict:
        lmbda, groups = self._by_lambda(
            lmbda_idx, x.shape[0], lambda sel, args: self.backbone.compress(x[sel], **args)
        )
        strings: list[list[bytes]] = [[b""] * x.shape[0], [b""] * x.shape[0]]
        for sel, out in groups:
            for pos, i in enumerate(sel.tolist()):
                strings[0][i], strings[1][i] = out["strings"][0][pos], out["strings"][1][pos]
        first = groups[0][1]
        return {
            "strings": strings,
            "shape": first["shape"],
            "image_size": first["image_size"],
            "lmbda_idx": lmbda,
        }

    def decompress(
        self,
        strings: Sequence[Sequence[bytes]],
        shape: Sequence[int],
        lmbda_idx: float | Sequence[float] | Tensor,
        **kwargs: Any,
    ) -> dict:
        def run(sel: Tensor, args: dict) -> dict:
            picked = [[s[i] for i in sel.tolist()] for s in strings]
            return self.backbone.decompress(picked, shape, **args, **kwargs)

        _, groups = self._by_lambda(lmbda_idx, len(strings[0]), run)
        order = torch.cat([sel for sel, _ in groups]).argsort()
        return {"x_hat": torch.cat([out["x_hat"] for _, out in groups])[order]}
