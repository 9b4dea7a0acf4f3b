"""Checkpoint compatibility: reference checkpoints, older CompressAI names, safe loading.

Released LIC_TCM / VBR_work checkpoints come as a plain state dict or ``{"state_dict": ...}``,
sometimes saved from ``nn.DataParallel`` (``module.`` prefixes) and sometimes with CompressAI's
pre-1.2 entropy-bottleneck names (``_matrix0``, ``_bias0``, ``_factor0``). Everything here turns
such files into the keys our models use, loading them with ``weights_only=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn

from lae_vbr.errors import LaeVbrError

from .compressai_compat import ENTROPY_BUFFERS

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "read_checkpoint",
    "load_state_dict_file",
    "extract_state_dict",
    "normalize_state_dict",
    "register_entropy_buffer_resizing",
    "copy_matching_weights",
    "flatten_child_keys",
]

_OLD_EB_NAME = re.compile(r"\._(matrix|bias|factor)(\d+)$")
_NEW_EB_NAME = {"matrix": "matrices", "bias": "biases", "factor": "factors"}
_ENTROPY_BUFFERS = ENTROPY_BUFFERS


class CheckpointError(LaeVbrError):
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


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds: the model's state dict (keys as our models use them) and,
    for this project's checkpoints and bundles, the composed config (None for plain
    state dicts such as the reference releases)."""

    state_dict: dict[str, Tensor]
    config: dict[str, Any] | None
    #: the codec description (``lae_vbr.description``) the file carries; None in older files
    description: dict[str, Any] | None = None


def read_checkpoint(
    path: str | PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> Checkpoint:
    """Read any supported checkpoint file safely (``weights_only=True``): the one reader.

    Lightning checkpoints of this project prefix the model's keys with ``model.`` (the
    LightningModule's attribute); when any key has it, those keys are kept without it and
    the module's other entries dropped. ``module.`` (DataParallel) prefixes and old CompressAI
    names are normalised. Raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint of tensors "
            f"({type(err).__name__})"
        ) from err
    config = description = None
    if isinstance(obj, Mapping) and isinstance(obj.get("hyper_parameters"), Mapping):
        config = obj["hyper_parameters"].get("cfg")
    if isinstance(obj, Mapping) and isinstance(obj.get("codec"), Mapping):
        description = dict(obj["codec"])
    try:
        state_dict = extract_state_dict(obj)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    strip = "model." if any(k.startswith("model.") for k in state_dict) else ""
    return Checkpoint(normalize_state_dict(state_dict, strip), config, description)


def load_state_dict_file(path: str | PathLike) -> dict[str, Tensor]:
    """The model state dict of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path).state_dict


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


def flatten_child_keys(module: nn.Module, child: str) -> None:
    """Store the entries of submodule ``child`` without its prefix, and load them back.

    The reference checkpoints are flat (``h_a.*``, ``entropy_bottleneck.*`` next to ``g_a.*``)
    while our models group those pieces in a module (the latent codec); with this, saving and
    loading keep the flat layout, so released checkpoints load unchanged. Register it before
    :func:`register_entropy_buffer_resizing`, which must see the nested keys.
    """
    inner = f"{child}."

    def flatten(owner: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix + inner)]:
            state_dict[prefix + key[len(prefix + inner) :]] = state_dict.pop(key)

    def nest(owner: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        owned = (inner, *(f"{name}." for name in owner._modules if name != child))
        direct = {*owner._parameters, *owner._buffers}
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            if not (rest.startswith(owned) or rest in direct):
                state_dict[prefix + inner + rest] = state_dict.pop(key)

    module.register_state_dict_post_hook(flatten)
    module.register_load_state_dict_pre_hook(nest)
