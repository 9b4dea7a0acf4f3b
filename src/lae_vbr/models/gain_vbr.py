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

The gain acts inside CompressAI's model (between its hyper-analysis and its quantiser, with
learned offsets), so this peer is not a composition of our pieces: it runs CompressAI's own
forward / compress / decompress. Latent refinement and the R-λ model, which need the composed
data path and an LAE mask, refuse it with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from compressai.models import JointAutoregressiveHierarchicalPriors
from compressai.registry import MODELS
from torch import Tensor, nn

from .composed import LearnedCodec, Shape, Strings
from .compressai_backbone import CompressAIBackbone
from .padding import crop_image, pad_image
from .rans import use_checked_decoding
from .rate import LambdaIndex, RateError, interpolate_log_linear
from .state_dict import flatten_child_keys, register_entropy_buffer_resizing

__all__ = ["GainVariableRate"]

#: CompressAI's code path with the gain and offsets (stage 1 is the plain fixed-rate model).
_VBR_STAGE = 2


class GainVariableRate(LearnedCodec):
    """A CompressAI ``*-vbr`` model whose rate is chosen by the λ index.

    Args:
        architecture: a CompressAI variable-rate model, e.g. ``"mbt2018-mean-vbr"``.
        lmbdas: the trained λ set; one gain per value.
        **kwargs: the model's constructor arguments (``N``, ``M``, ...).
    """

    pad_multiple = CompressAIBackbone.pad_multiple
    #: How it can code: CompressAI's float32 entropy parameters (no reproducibility check).
    arithmetics = ("float32",)

    def __init__(self, architecture: str, lmbdas: Sequence[float], **kwargs: Any) -> None:
        super().__init__(self.pad_multiple, len(lmbdas))
        model = MODELS[architecture](**kwargs) if architecture in MODELS else None
        if not hasattr(model, "Gain"):
            raise TypeError(f"{architecture} is not a CompressAI variable-rate (-vbr) model")
        if isinstance(model, JointAutoregressiveHierarchicalPriors):
            raise TypeError(
                f"{architecture} decodes with CompressAI's unchecked serial decoder; the gain "
                "peer supports bmshj2018-hyperprior-vbr and mbt2018-mean-vbr"
            )
        use_checked_decoding(model)
        flatten_child_keys(self, "model")
        register_entropy_buffer_resizing(self)
        self.architecture = architecture
        self.model = model
        values = torch.tensor([float(v) for v in lmbdas])
        model.lmbda = values.tolist()
        model.levels = len(values)
        model.Gain = nn.Parameter((values / values.max()).sqrt(), requires_grad=False)

    @classmethod
    def around(
        cls, backbone: nn.Module, lmbdas: Sequence[float], num_lmbdas: int | None = None
    ) -> GainVariableRate:
        """The ``-vbr`` sibling of a fixed-rate CompressAI backbone, same architecture args
        (``model/rate=gain``)."""
        name = getattr(backbone, "architecture", None)
        if name is None or f"{name}-vbr" not in MODELS:
            peers = sorted(m[: -len("-vbr")] for m in MODELS if m.endswith("-vbr"))
            raise ValueError(
                f"the gain baseline exists for CompressAI's {', '.join(peers)} only, not for "
                f"{name or type(backbone).__name__}"
            )
        if num_lmbdas is not None and len(lmbdas) != num_lmbdas:
            raise ValueError(f"the gain peer got {len(lmbdas)} λ values for {num_lmbdas} indices")
        return cls(f"{name}-vbr", lmbdas, **backbone.kwargs)

    def _check_arithmetic(self, arithmetic: str) -> None:
        if arithmetic not in self.arithmetics:
            raise RateError(
                "the gain-based peer codes inside CompressAI's model, in "
                f"{' or '.join(self.arithmetics)} only (asked for {arithmetic})"
            )

    def gain(self, lmbda_idx: Tensor) -> Tensor:
        """Gain of a (possibly fractional) λ index: log-linear between the trained points."""
        return interpolate_log_linear(self.model.Gain.detach().abs(), lmbda_idx)

    def _rate_args(self, lmbda_idx: Tensor) -> dict[str, Any]:
        # Training uses Gain[s]; evaluation and coding use inputscale (any index).
        return {
            "stage": _VBR_STAGE,
            "s": int(lmbda_idx.round()),
            "inputscale": self.gain(lmbda_idx),
        }

    def _by_lambda(
        self, lmbda_idx: LambdaIndex | None, batch: int, run: Callable
    ) -> tuple[Tensor, list[tuple[Tensor, dict]]]:
        """Run ``run(selection, rate_args)`` once per distinct λ index of the batch (the
        model takes one gain per call)."""
        lmbda = self.lmbda_input(lmbda_idx, batch)
        groups = []
        for value in lmbda.unique():
            sel = (lmbda == value).nonzero().squeeze(1)
            groups.append((sel, run(sel, self._rate_args(value))))
        return lmbda, groups

    def forward(self, x: Tensor, lmbda_idx: LambdaIndex | None = None) -> dict:
        padded = pad_image(x, self.pad_multiple)
        lmbda, groups = self._by_lambda(
            lmbda_idx, x.shape[0], lambda sel, args: self.model(padded[sel], **args)
        )
        order = torch.cat([sel for sel, _ in groups]).argsort()
        outs = [out for _, out in groups]
        x_hat = torch.cat([o["x_hat"] for o in outs])[order]
        return {
            "x_hat": crop_image(x_hat, *x.shape[-2:]),
            "likelihoods": {
                k: torch.cat([o["likelihoods"][k] for o in outs])[order]
                for k in outs[0]["likelihoods"]
            },
            "lmbda_idx": lmbda,
        }

    def compress(
        self, x: Tensor, lmbda_idx: LambdaIndex | None = None, arithmetic: str = "float32"
    ) -> dict:
        """CompressAI's coding at the λ's gain; float32 only (see :attr:`arithmetics`)."""
        self._check_arithmetic(arithmetic)
        padded = pad_image(x, self.pad_multiple)
        lmbda, groups = self._by_lambda(
            lmbda_idx, x.shape[0], lambda sel, args: self.model.compress(padded[sel], **args)
        )
        strings: list[list[bytes]] = [[b""] * x.shape[0], [b""] * x.shape[0]]
        for sel, out in groups:
            for pos, i in enumerate(sel.tolist()):
                strings[0][i], strings[1][i] = out["strings"][0][pos], out["strings"][1][pos]
        return {
            "strings": strings,
            "shape": tuple(x.shape[-2:]),
            "lmbda_idx": lmbda,
            "arithmetic": "float32",
        }

    def decompress(
        self,
        strings: Strings,
        shape: Shape,
        lmbda_idx: LambdaIndex | None = None,
        arithmetic: str = "float32",
    ) -> dict:
        self._check_arithmetic(arithmetic)
        height, width = (int(v) for v in shape)
        z_shape = self.z_shape(height, width)

        def run(sel: Tensor, args: dict) -> dict:
            picked = [[s[i] for i in sel.tolist()] for s in strings]
            return self.model.decompress(picked, z_shape, **args)

        _, groups = self._by_lambda(lmbda_idx, len(strings[0]), run)
        order = torch.cat([sel for sel, _ in groups]).argsort()
        x_hat = torch.cat([out["x_hat"] for _, out in groups])[order]
        return {"x_hat": crop_image(x_hat, height, width)}
