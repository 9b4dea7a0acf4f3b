"""Codecs: fixed-rate TCM and CompressAI backbones, the LAE, and the variable-rate wrappers."""

from .compressai_backbone import CompressAIBackbone
from .gain_vbr import GainVariableRate
from .lae import LAE
from .tcm import TCM, TCM_SIZES
from .vbr import TCMVBR, VariableRateCodec

__all__ = [
    "LAE",
    "TCM",
    "TCM_SIZES",
    "TCMVBR",
    "CompressAIBackbone",
    "GainVariableRate",
    "VariableRateCodec",
]
