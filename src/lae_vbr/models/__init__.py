"""Codecs as explicit compositions: ``g_a → [encoder LAE] → latent codec → [decoder LAE] → g_s``.

``TCM`` and ``TCMVBR`` are registered in CompressAI's model registry as ``tcm`` and
``tcm-vbr`` (``compressai.zoo.image_models`` style: ``compressai.registry.MODELS["tcm"]``).

Importing this package imports CompressAI as it is; the ``lae-vbr`` command alone defers
CompressAI's subpackages it never uses, in its own process (:mod:`lae_vbr.lean_imports`).
"""

from .composed import ComposedCodec, LearnedCodec
from .compressai_backbone import CompressAIBackbone, CompressAIHyperprior
from .gain_vbr import GainVariableRate
from .lae import LAE
from .latent_codec import LatentCodec, TCMLatentCodec
from .rate import RateError
from .tcm import TCM
from .vbr import TCMVBR, VariableRateCodec

__all__ = [
    "LAE",
    "TCM",
    "TCMVBR",
    "ComposedCodec",
    "CompressAIBackbone",
    "CompressAIHyperprior",
    "GainVariableRate",
    "LatentCodec",
    "LearnedCodec",
    "RateError",
    "TCMLatentCodec",
    "VariableRateCodec",
]
