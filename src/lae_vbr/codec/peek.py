"""What a checkpoint says about its model's rate (a :class:`~lae_vbr.rate_axis.RateAxis`),
read without importing torch: from its codec description (:mod:`lae_vbr.description`), or
the description its config translates to (older files).

``lae-vbr compress`` needs a rate option for a variable-rate model and none for a fixed-rate
one. Loading the model to find out costs seconds (importing torch, building the network, the
entropy tables); reading the pickled config out of the checkpoint's zip archive costs
milliseconds, so a usage mistake is reported at once. The model's own answer stays the
authority: the command checks again after loading, and a checkpoint this reader cannot
interpret (legacy torch format, unknown layout) gives ``None``, which defers the check.

The archive's ``data.pkl`` is unpickled with every non-builtin class replaced by an inert
stand-in and tensor storages by ``None``: no code from the file runs, and only the plain
dicts, lists, strings and numbers of the config and the state-dict keys come out.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from os import PathLike
from typing import Any

from lae_vbr.description import CodecDescription, DescriptionError
from lae_vbr.rate_axis import PAPER_MSE_LMBDAS, RateAxis

__all__ = ["peek_rate_axis"]

#: Largest pickle (bytes) read from an archive: configs and key lists are far smaller.
MAX_PICKLE_BYTES = 64 << 20
_SAFE = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}


class _Inert(dict):
    """Stand-in for any class a checkpoint pickles (tensors, Lightning's AttributeDict…)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, Mapping):
            self.update(state)


class _PeekUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        return _Inert

    def persistent_load(self, pid: Any) -> None:
        return None


def _load_pickle(path: str | PathLike) -> Any:
    with zipfile.ZipFile(path) as archive:
        member = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if member is None or archive.getinfo(member).file_size > MAX_PICKLE_BYTES:
            return None
        with archive.open(member) as file:
            return _PeekUnpickler(file).load()


def peek_rate_axis(path: str | PathLike, default_name: str) -> RateAxis | None:
    """The rate settings recorded in a checkpoint file; None when they cannot be told
    cheaply (the loaded model is asked then)."""
    try:
        obj = _load_pickle(path)
    except Exception:  # not a zip checkpoint, or one this reader does not understand
        return None
    if not isinstance(obj, Mapping):
        return None
    hparams = obj.get("hyper_parameters")
    cfg = hparams.get("cfg") if isinstance(hparams, Mapping) else None
    try:
        if isinstance(obj.get("codec"), Mapping):
            description = CodecDescription.from_dict(obj["codec"])
            return replace(description, name=description.name or default_name).rate_axis
        if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
            return CodecDescription.from_config(cfg, default_name).rate_axis
    except DescriptionError:
        return None  # the loaded model will say
    state = obj.get("state_dict", obj)
    if isinstance(state, Mapping) and any(isinstance(k, str) for k in state):
        keys = [str(k).removeprefix("module.") for k in state]
        variable = any(k.startswith("modnet_ga.") for k in keys)  # as load_codec infers it
        name = f"'{'tcm-vbr' if variable else 'tcm'}:{default_name}'"
        # as load_codec takes it: the paper's λ set
        return RateAxis(name, len(PAPER_MSE_LMBDAS) if variable else 1)
    return None
