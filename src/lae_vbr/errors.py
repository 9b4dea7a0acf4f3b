"""The one base class of every error this package raises for a request it cannot carry out.

Entry points (``lae-vbr``, ``src/train.py``, ``src/eval.py``) catch :class:`LaeVbrError` and
print its message as one line; anything else is a bug and keeps its traceback. Each subsystem
defines its own subclasses (``ConfigError``, ``CheckpointError``, ``DataError``,
``CodecError``, ``ContainerError``, ``EvalError`` …) next to the code that raises them.
"""

from __future__ import annotations

__all__ = ["LaeVbrError", "RateError"]


class LaeVbrError(ValueError):
    """A request that cannot be carried out as given; the message says what to change.

    A ``ValueError``, since every such request is a bad value (a path, an option, a file).
    """


class RateError(LaeVbrError):
    """A rate setting the model cannot use (out of range, missing, or given to a fixed-rate
    model)."""
