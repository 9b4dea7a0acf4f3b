"""Checkpoint compatibility: reference checkpoints, older CompressAI names, safe loading.

Released LIC_TCM / VBR_work checkpoints come as a plain state dict or ``{"state_dict": ...}``,
sometimes saved from ``nn.DataParallel`` (``module.`` prefixes) and sometimes with CompressAI's
pre-1.2 entropy-bottleneck names (``_matrix0``, ``_bias0``, ``_factor0``). Everything here turns
such files into the keys our models use, loading them with ``weights_only=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "load_state_dict_file",
    "extract_state_dict",
    "normalize_state_dict",
    "register_entropy_buffer_resizing",
    "copy_matching_weights",
]

_OLD_EB_NAME = re.compile(r"\._(matrix|bias|factor)(\d+)$")
_NEW_EB_NAME = {"matrix": "matrices", "bias": "biases", "factor": "factors"}
_ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, unreadable, or not a state dict)."""


def extract_state_dict(obj: Any) -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint object (plain, ``state_dict`` or Lightning)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointError("file does not hold a state dict of tensors")
    return dict(obj)


def normalize_state_dict(state_dict: Mapping[str, Tensor], strip: str = "") -> dict[str, Tensor]:
    """Drop ``module.`` (DataParallel) and an optional extra prefix such as ``model.``
    (Lightning), and rename old CompressAI entropy-bottleneck parameters."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if strip:
            if not key.startswith(strip):
                continue
            key = key[len(strip) :]
        key = _OLD_EB_NAME.sub(lambda m: f".{_NEW_EB_NAME[m.group(1)]}.{m.group(2)}", key)
        out[key] = value
    return out


def load_state_dict_file(path: str | PathLike, strip: str = "") -> dict[str, Tensor]:
    """Load a checkpoint file safely (``weights_only=True``) and normalise its keys.

    Lightning checkpoints of this project prefix model keys with ``model.``; they are
    detected and stripped unless ``strip`` says otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    state_dict = extract_state_dict(obj)
    if not strip and state_dict and all(k.startswith("model.") for k in state_dict):
        strip = "model."
    return normalize_state_dict(state_dict, strip)


def _resize_entropy_buffers(
    module: nn.Module, state_dict: dict, prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load pre-hook: size the CDF tables (empty until ``update()``) like the incoming ones,
    and accept the old entropy-bottleneck parameter names."""
    for key in [k for k in state_dict if k.startswith(prefix) and _OLD_EB_NAME.search(k)]:
        new = _OLD_EB_NAME.sub(lambda m: f".{_NEW_EB_NAME[m.group(1)]}.{m.group(2)}", key)
        state_dict[new] = state_dict.pop(key)
    for name, sub in module.named_modules():
        if not isinstance(sub, (EntropyBottleneck, GaussianConditional)):
            continue
        base = f"{prefix}{name}." if name else prefix
        for buffer_name in _ENTROPY_BUFFERS:
            incoming = state_dict.get(base + buffer_name)
            current = sub._buffers.get(buffer_name)
            if incoming is not None and current is not None and current.shape != incoming.shape:
                sub._buffers[buffer_name] = torch.empty(
                    incoming.shape, dtype=current.dtype, device=current.device
                )


def register_entropy_buffer_resizing(model: nn.Module) -> None:
    """Make ``model`` load checkpoints whose CDF tables were built (``update()``), also when
    it is loaded as a submodule (e.g. inside a LightningModule)."""
    model.register_load_state_dict_pre_hook(_resize_entropy_buffers)


def copy_matching_weights(
    target: nn.Module, source: Mapping[str, Tensor]
) -> tuple[list[str], list[str]]:
    """Copy every entry of ``source`` whose key and shape match ``target``'s state dict.

    Used to initialise a variable-rate model from a fixed-rate checkpoint. Returns
    ``(copied, skipped)`` key lists; target entries absent from ``source`` keep their values.
    """
    own = target.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(source) - set(matched))
    merged = {**own, **matched}
    target.load_state_dict(merged)
    return sorted(matched), skipped
