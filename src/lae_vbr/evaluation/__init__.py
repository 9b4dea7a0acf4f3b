"""Rate-distortion evaluation: real bitstreams, quality metrics, anchors, BD-rate, plots.

From Python: read images with :func:`load_test_images`, measure with
:func:`measure_checkpoints` / :func:`measure_model` / :func:`measure_classical`, turn the
rows into curves and BD-rates with :func:`summarise_rd` and write them with :func:`write_rd`.
:func:`evaluate` is what ``python src/eval.py`` (``study=rd``) runs.
"""

from .bdrate import BDResult, BDSettings, bd_rate, bd_rate_table
from .classical import ClassicalCodec, codecs_from_config
from .inputs import InputImage, load_test_images, open_codec, torch_threads
from .measure import (
    Measured,
    RDSettings,
    curve_of,
    measure_checkpoints,
    measure_classical,
    measure_model,
)
from .metrics import image_metrics, summarize
from .results import EvalError, RDCurve, curve_from_points, read_curve, write_curve
from .runner import EvalReport, evaluate, summarise_rd, write_rd

__all__ = [
    "BDResult",
    "BDSettings",
    "ClassicalCodec",
    "EvalError",
    "EvalReport",
    "InputImage",
    "Measured",
    "RDCurve",
    "RDSettings",
    "bd_rate",
    "bd_rate_table",
    "codecs_from_config",
    "curve_from_points",
    "curve_of",
    "evaluate",
    "image_metrics",
    "load_test_images",
    "measure_checkpoints",
    "measure_classical",
    "measure_model",
    "open_codec",
    "read_curve",
    "summarise_rd",
    "summarize",
    "torch_threads",
    "write_curve",
    "write_rd",
]
