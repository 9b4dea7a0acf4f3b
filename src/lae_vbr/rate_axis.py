"""A model's rate settings, described once: the one place that answers what rate a model takes.

A variable-rate model takes a λ index in ``[0, max_index]`` (fractional allowed: λ log-linear
between the trained values); a fixed-rate model takes none. Every layer asks this object (the
command line before and after loading a model, the codec, the evaluation, the studies,
training) and every message about a missing, superfluous or out-of-range rate option is worded
here. Pure Python: the command line builds one from what a checkpoint file records, without
importing torch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from lae_vbr.codec.container import to_float32
from lae_vbr.errors import RateError

__all__ = [
    "CONTROL_OPTIONS",
    "LATENT_STRIDE",
    "PAPER_MSE_LMBDAS",
    "RATE_OPTIONS",
    "RateAxis",
    "index_of_value",
]

#: Pixels per side of the padded image that one latent position covers (g_a's stride): a
#: λ-index map (region-of-interest coding) has one index per such block.
LATENT_STRIDE = 16

#: The paper's six MSE λ values (TCM's fixed-rate points); λ index i selects PAPER_MSE_LMBDAS[i].
PAPER_MSE_LMBDAS = (0.0025, 0.0035, 0.0067, 0.013, 0.025, 0.05)

#: The command line's rate options, as the messages name them (``--total-size``: folders).
RATE_OPTIONS = ("--quality Q", "--lmbda L", "--bpp TARGET", "--size BYTES", "--psnr DB")
_ALL_OPTIONS = "--quality, --lmbda, --bpp, --size, --psnr or --total-size"
#: The options whose λ index rate or quality control finds (and the folder's total budget).
CONTROL_OPTIONS = ("bpp", "size", "psnr", "total_size")


@dataclass(frozen=True)
class RateAxis:
    """What rate settings a model takes.

    Args:
        model: the model's name, as messages give it.
        num_indices: trained λ values (1: a fixed-rate model).
        lmbdas: the trained λ values when recorded (empty when the checkpoint does not say).
    """

    model: str
    num_indices: int
    lmbdas: tuple[float, ...] = ()

    @property
    def variable(self) -> bool:
        """Whether the model takes a rate setting (several trained λ)."""
        return self.num_indices > 1

    @property
    def max_index(self) -> int:
        return self.num_indices - 1

    @property
    def recorded(self) -> bool:
        """Whether the trained λ values are known (reference state dicts do not say)."""
        return len(self.lmbdas) == self.num_indices

    def hint(self) -> str:
        """The rate options a variable-rate model accepts, with its ranges."""
        quality, lmbda = f"{RATE_OPTIONS[0]} (a λ index in [0, {self.max_index}])", RATE_OPTIONS[1]
        if self.recorded:
            lmbda += f" (a λ in [{min(self.lmbdas):g}, {max(self.lmbdas):g}])"
        return f"{quality}, {lmbda}, {', '.join(RATE_OPTIONS[2:-1])} or {RATE_OPTIONS[-1]}"

    def check_given(self, given: bool) -> None:
        """RateError unless a rate option is given exactly when the model takes one."""
        if self.variable and not given:
            raise RateError(f"model {self.model} is variable-rate: pass {self.hint()}")
        if not self.variable and given:
            raise RateError(f"model {self.model} is fixed-rate: it takes no {_ALL_OPTIONS}")

    def require_variable(self, what: str) -> None:
        """RateError unless the model has a rate to set (``what`` names the feature)."""
        if not self.variable:
            raise RateError(f"{what} needs a variable-rate model; {self.model} is fixed-rate")

    def check_index(self, lmbda_idx: float | None) -> float | None:
        """The λ index a file records (float32), or None for a fixed-rate model; RateError
        unless a variable-rate model gets one index in range and a fixed-rate model none."""
        if not self.variable:
            if lmbda_idx is not None:
                raise RateError(f"model {self.model} is fixed-rate: it takes no rate setting")
            return None
        if lmbda_idx is None:
            raise RateError(
                f"model {self.model} is variable-rate: λ index required ({self.hint()})"
            )
        value = to_float32(float(lmbda_idx))  # as the file stores it
        if not (math.isfinite(value) and 0 <= value <= self.max_index):
            raise RateError(f"λ index {value:g} is outside the trained range [0, {self.max_index}]")
        return value

    def index(self, quality: float | None = None, lmbda: float | None = None) -> float | None:
        """The λ index of a quality (itself a λ index) or a λ value; None for fixed rate."""
        if quality is not None and lmbda is not None:
            raise RateError("give one of quality or lmbda, not both")
        if lmbda is not None and self.variable:
            if not self.recorded:
                raise RateError(f"model {self.model} does not record its λ values; use a quality")
            return self.check_index(index_of_value(self.lmbdas, float(lmbda)))
        self.check_given(quality is not None or lmbda is not None)
        return self.check_index(quality)


def index_of_value(values: Sequence[float], lmbda: float) -> float:
    """The fractional λ index of a λ value inside the trained range (log-linear)."""
    table = [float(v) for v in values]
    if len(table) < 2:
        raise RateError("mapping λ to an index needs at least two trained λ values")
    lo, hi = min(table), max(table)
    if not (math.isfinite(lmbda) and lo <= lmbda <= hi):
        raise RateError(f"lmbda {lmbda:g} is outside the trained range [{lo:g}, {hi:g}]")
    if any(a >= b for a, b in pairwise(table)):
        if any(a <= b for a, b in pairwise(table)):
            raise RateError(f"the trained λ values {table} are not monotonic")
        return len(table) - 1 - index_of_value(table[::-1], lmbda)
    i = min(bisect.bisect_right(table, lmbda) - 1, len(table) - 2)
    a, b = math.log(table[i]), math.log(table[i + 1])
    return i + (math.log(lmbda) - a) / (b - a)
