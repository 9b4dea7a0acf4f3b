"""Targets of rate and quality control as the user writes them: a bit rate, a file size or a
PSNR. Pure Python (no torch), so the command line refuses a bad target before the model loads.

Sizes take decimal SI suffixes, as disk and network sizes are quoted: ``k`` = 1000 bytes and
``M`` = 1 000 000 bytes; binary ones are spelled out, ``Ki`` = 1024 and ``Mi`` = 1024². A
trailing ``B`` is allowed and case does not matter for ``k``/``ki`` (``m`` alone is refused:
milli- or mega- would be a guess).
"""

from __future__ import annotations

import math
import re

__all__ = ["SIZE_UNITS", "TargetError", "check_positive", "parse_size"]

#: Multipliers of the size suffixes (keys lower-case except ``M``/``Mi``, see the module).
SIZE_UNITS = {"": 1, "k": 1000, "M": 1000**2, "ki": 1024, "Mi": 1024**2}

_SIZE = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*?)\s*[bB]?\s*$")


class TargetError(ValueError):
    """A target that is not a usable number (the callers turn it into their own error)."""


def check_positive(value: float | int | str, what: str, unit: str) -> float:
    """``value`` as a float; TargetError unless it is a positive finite number of ``unit``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TargetError(f"{what} must be a positive number of {unit}, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise TargetError(f"{what} must be a positive number of {unit}, got {number:g}")
    return number


def _unit(suffix: str) -> int | None:
    """The multiplier of a size suffix, or None: ``k``/``ki`` in any case, ``M`` and ``Mi``
    with a capital M only (``m`` could mean milli)."""
    if suffix in ("", "M", "Mi"):
        return SIZE_UNITS[suffix]
    if suffix.lower() in ("k", "ki"):
        return SIZE_UNITS[suffix.lower()]
    return None


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"20000"``, ``"20k"``, ``"1.5M"``, ``"64KiB"`` (see the module for the
    units); a fractional result is rounded down, since a size is a budget. TargetError for
    anything else, including sizes under one byte."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        number, unit = float(text), 1
    else:
        match = _SIZE.match(str(text))
        unit = _unit(match.group(2)) if match else None
        if match is None or unit is None:
            raise TargetError(
                f"not a size: {text!r} (bytes, optionally with k = 1000, M = 10⁶, "
                "Ki = 1024 or Mi = 1024²; e.g. 20k, 1.5M, 64KiB)"
            )
        number = float(match.group(1))
    size = check_positive(number * unit, "a size", "bytes")
    if size < 1 or not math.isfinite(size):
        raise TargetError(f"a size must be at least one byte, got {text!r}")
    return int(size)
