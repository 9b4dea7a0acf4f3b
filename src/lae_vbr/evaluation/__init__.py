"""Rate-distortion evaluation: real bitstreams, quality metrics, anchors, BD-rate, plots."""

from .bdrate import BDResult, bd_rate, bd_rate_table
from .classical import ClassicalCodec, codecs_from_config
from .metrics import image_metrics, summarize
from .results import EvalError, RDCurve, curve_from_points, read_curve, write_curve
from .runner import EvalReport, evaluate

__all__ = [
    "BDResult",
    "ClassicalCodec",
    "EvalError",
    "EvalReport",
    "RDCurve",
    "bd_rate",
    "bd_rate_table",
    "codecs_from_config",
    "curve_from_points",
    "evaluate",
    "image_metrics",
    "read_curve",
    "summarize",
    "write_curve",
]
