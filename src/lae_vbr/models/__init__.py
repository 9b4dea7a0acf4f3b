"""Codecs: fixed-rate TCM, the LAE, and the variable-rate wrapper."""

from .lae import LAE
from .tcm import TCM, TCM_SIZES
from .vbr import TCMVBR, VariableRateCodec

__all__ = ["LAE", "TCM", "TCM_SIZES", "TCMVBR", "VariableRateCodec"]
