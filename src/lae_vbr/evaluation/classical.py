"""Classical image codecs through Pillow (JPEG, WebP, AVIF), measured like the model.

Each image is encoded to bytes in memory at every quality of the sweep and decoded back; the
rate is the whole file (headers included), as for the published JPEG/WebP anchors. AVIF uses
Pillow's built-in AVIF support when the installed Pillow has it (Pillow 13 does), else the
``pillow-avif-plugin`` package if installed; the description of each curve says which.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL
from PIL import Image

from .results import EvalError

__all__ = ["ClassicalCodec", "codecs_from_config"]


def _backend(fmt: str) -> str | None:
    """Who writes ``fmt`` here: "Pillow", "pillow-avif-plugin", or None (nobody)."""
    Image.init()
    if fmt in Image.SAVE:
        return "Pillow"
    if fmt == "AVIF":
        try:
            import pillow_avif  # noqa: F401  (registers AVIF with Pillow on import)
        except ImportError:
            return None
        return "pillow-avif-plugin" if fmt in Image.SAVE else None
    return None


@dataclass
class ClassicalCodec:
    """A Pillow format and a quality sweep; ``options`` go to ``Image.save`` unchanged."""

    key: str
    name: str
    format: str
    qualities: Sequence[int]
    options: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Fail early, with the reason, when this Pillow build cannot write the format."""
        if _backend(self.format) is None:
            raise EvalError(f"Pillow {PIL.__version__} cannot write {self.format} ({self.key})")
        if not self.qualities:
            raise EvalError(f"classical.{self.key}.qualities is empty")

    def description(self) -> str:
        """How the curve was made (format, backend, versions, options), for its results file."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items()) or "defaults"
        backend = _backend(self.format)
        return f"{self.format} via {backend} (Pillow {PIL.__version__}; {opts}); bpp from file size"

    def roundtrip(self, image: np.ndarray, quality: int) -> tuple[np.ndarray, int, float, float]:
        """Encode an HxWx3 uint8 image in memory and decode it: (decoded, bytes, t_enc, t_dec)."""
        pil = Image.fromarray(image, "RGB")
        buffer = io.BytesIO()
        start = time.perf_counter()
        pil.save(buffer, format=self.format, quality=int(quality), **self.options)
        encoded = time.perf_counter()
        data = buffer.getvalue()
        start_dec = time.perf_counter()
        with Image.open(io.BytesIO(data)) as decoded_img:
            decoded = np.asarray(decoded_img.convert("RGB"))
        decoded_t = time.perf_counter()
        # a writable copy (Pillow's array is read-only), which torch converts without a warning
        return decoded.copy(), len(data), encoded - start, decoded_t - start_dec


def codecs_from_config(node: Mapping[str, Any] | None) -> list[ClassicalCodec]:
    """``classical`` config (one entry per selected codec) → checked codecs."""
    codecs = []
    for key, spec in (node or {}).items():
        codec = ClassicalCodec(
            key=str(key),
            name=str(spec.get("name", key)),
            format=str(spec["format"]).upper(),
            qualities=[int(q) for q in spec.get("qualities", [])],
            options=dict(spec.get("options") or {}),
        )
        codec.check()
        codecs.append(codec)
    return codecs
