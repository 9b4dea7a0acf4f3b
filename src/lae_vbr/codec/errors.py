"""Errors of coding images: each a :class:`~lae_vbr.errors.LaeVbrError`, one line to the user.

``RateError`` (a rate setting the model cannot use) is raised by the models themselves and
lives with the rate rules in :mod:`lae_vbr.models.rate`; it is re-exported here.
"""

from __future__ import annotations

from lae_vbr.errors import LaeVbrError, RateError

__all__ = ["CodecError", "DecodeError", "ImageError", "ModelMismatchError", "RateError"]


class CodecError(LaeVbrError):
    """Base of the errors raised for a coding request the codec cannot carry out."""


class ImageError(CodecError):
    """An input image that cannot be read or is too large."""


class DecodeError(CodecError):
    """A well-formed file that this model cannot decode."""


class ModelMismatchError(DecodeError):
    """The file was written by a model with other weights."""
