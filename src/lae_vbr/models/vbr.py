"""Variable-rate coding by composition: LAEs around any composed fixed-rate codec.

:class:`VariableRateCodec` takes a fixed-rate :class:`~lae_vbr.models.composed.ComposedCodec`
(TCM, or a CompressAI model through :class:`~lae_vbr.models.CompressAIBackbone`) apart and
composes its pieces with two LAEs::

    g_a → modnet_ga (encoder LAE) → latent codec → modnet_gs (decoder LAE) → g_s

Everything between the LAEs is the fixed-rate codec, unchanged. The checkpoint layout is flat,
as in the reference ``TCM_VBR``: backbone keys unprefixed (``g_a.0.conv1.weight``) next to
``modnet_ga.*`` / ``modnet_gs.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compressai.registry import register_model
from torch import Tensor

from .composed import ComposedCodec
from .lae import LAE
from .state_dict import normalize_state_dict
from .tcm import TCM, tcm_arguments

__all__ = ["TCMVBR", "VariableRateCodec"]


class VariableRateCodec(ComposedCodec):
    """A fixed-rate codec made variable-rate by an encoder-side and a decoder-side LAE.

    Args:
        backbone: the fixed-rate codec whose ``g_a``, latent codec and ``g_s`` are reused.
        latent_channels: channels of y (default: the backbone's).
        num_lmbdas: size of the trained λ set; valid λ indices are [0, num_lmbdas − 1].
        encoder_lae, decoder_lae: build the LAE after ``g_a`` / before ``g_s``.
        contextual: keep the contextual branch (α·ctx(y)) of the LAE masks.
        lae_layers: depth of the λ embedding MLP.
    """

    def __init__(
        self,
        backbone: ComposedCodec,
        latent_channels: int | None = None,
        num_lmbdas: int = 6,
        encoder_lae: bool = True,
        decoder_lae: bool = True,
        contextual: bool = True,
        lae_layers: int = 2,
    ) -> None:
        if not isinstance(backbone, ComposedCodec):
            raise TypeError(
                f"{type(backbone).__name__} is not built as g_a → latent codec → g_s; "
                "LAEs wrap TCM or CompressAIBackbone models"
            )
        if backbone.modnet_ga is not None or backbone.modnet_gs is not None:
            raise TypeError("the backbone already has LAEs; wrap its fixed-rate version")
        channels = backbone.latent_channels if latent_channels is None else int(latent_channels)

        def lae(enabled: bool) -> LAE | None:
            return LAE(channels, lae_layers, contextual) if enabled else None

        super().__init__(
            backbone.g_a,
            backbone.latent_codec,
            backbone.g_s,
            latent_channels=channels,
            pad_multiple=backbone.pad_multiple,
            num_lmbdas=num_lmbdas,
            modnet_ga=lae(encoder_lae),
            modnet_gs=lae(decoder_lae),
        )


@register_model("tcm-vbr")
class TCMVBR(VariableRateCodec):
    """TCM with both of the paper's LAEs (the reference ``TCM_VBR``); extra kwargs go to
    :class:`TCM` (ablations: ``VariableRateCodec(TCM(...), encoder_lae=…, …)``)."""

    def __init__(
        self,
        N: int = 64,
        M: int = 320,
        num_lmbdas: int = 6,
        decoder_lae: bool = True,
        **tcm_kwargs: Any,
    ) -> None:
        super().__init__(
            TCM(N=N, M=M, **tcm_kwargs),
            latent_channels=M,
            num_lmbdas=num_lmbdas,
            decoder_lae=decoder_lae,
        )
        self.N, self.M = N, M

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], num_lmbdas: int = 6) -> TCMVBR:
        """A TCM-VBR with the architecture the tensors imply, loaded (CompressAI's convention):
        TCM's arguments from the shapes, the decoder-side LAE when the tensors have one."""
        sd = normalize_state_dict(state_dict)
        decoder = any(k.startswith("modnet_gs.") for k in sd)
        net = cls(**tcm_arguments(sd), num_lmbdas=num_lmbdas, decoder_lae=decoder)
        net.load_state_dict(sd)
        return net
