"""What a results file says about the codec and the run behind it: CompressAI's curve name and
the ``meta`` block.

CompressAI names a model's curve ``<architecture>-<metric>`` (``compressai.utils.eval_model``:
``bmshj2018-hyperprior-vbr-mse``; an architecture ending in ``-vbr`` is variable-rate). Its newer
results files (``results/image/kodak/paper-elic2022_mse.json``) and CompressAI-Trainer's put a
``meta`` block between ``description`` and ``results``: CompressAI with ``type``,
``opt_metric``, ``dataset``, ``train_dataset``, ``device``; the Trainer with flat, dotted keys
(``model.name``, ``criterion.lmbda``, ``paths.model_checkpoint``, ...). Both are used here.
This project does the same and adds what makes a curve reproducible: the package version, the
git commit, the command line and the date. Paths are written as :func:`~lae_vbr.paths.portable_path`
gives them, so a file tells nothing about the machine that produced it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cache
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from lae_vbr import __version__
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.models.gain_vbr import GainVariableRate
from lae_vbr.models.latent_codec import TCMLatentCodec
from lae_vbr.models.registry import LoadedCodec
from lae_vbr.paths import REPO_ROOT, portable_path

__all__ = [
    "architecture",
    "codec_meta",
    "command_line",
    "curve_name",
    "dataset_meta",
    "git_commit",
    "merge_meta",
    "metric_name",
    "portable_text",
    "run_meta",
]

#: An absolute (or home-relative) path inside a command line or a text: at the start or after
#: a separator Hydra overrides use (``key=/a``, ``[/a,/b]``); never a URL's ``//``.
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s=\[,'\"(]))~?/(?!/)[^\s,\]'\")]*")


def _backbone(loaded: LoadedCodec) -> str:
    """The fixed-rate architecture under the rate method, in CompressAI's spelling."""
    model = loaded.model
    if isinstance(model, GainVariableRate):
        return model.architecture.removesuffix("-vbr")
    backbone = (loaded.config.get("model") or {}).get("backbone") or {}
    named = backbone.get("architecture") or getattr(model, "architecture", None)
    if named:
        return str(named)
    if isinstance(getattr(model, "latent_codec", None), TCMLatentCodec):
        return "tcm"
    return type(model).__name__.lower()


def _rate_method(loaded: LoadedCodec) -> str:
    """``""`` (fixed rate), ``"gain-vbr"`` or ``"lae[-enc|-dec][-noctx]-vbr"``: the LAE
    ablations get names of their own so that a sweep over ``model/rate`` keeps its curves
    apart."""
    model = loaded.model
    if isinstance(model, GainVariableRate):
        return "gain-vbr"
    if not loaded.rate_axis.variable:
        return ""
    encoder, decoder = getattr(model, "modnet_ga", None), getattr(model, "modnet_gs", None)
    sides = {"lae": (True, True), "lae-enc": (True, False), "lae-dec": (False, True)}
    present = (encoder is not None, decoder is not None)
    if not any(present):  # variable-rate by another method than the two above
        return "vbr"
    tag = next(name for name, has in sides.items() if has == present)
    lae = encoder if encoder is not None else decoder
    contextual = getattr(getattr(lae, "mask", None), "contextual", True)
    return f"{tag}-vbr" if contextual else f"{tag}-noctx-vbr"


def architecture(loaded: LoadedCodec) -> str:
    """The codec's architecture as CompressAI would name it: the backbone, then the rate
    method (``tcm-lae-vbr``, ``mbt2018-mean-gain-vbr``, ``tcm`` for fixed rate). The LAE
    method is spelled out because CompressAI's plain ``mbt2018-mean-vbr`` is the gain method,
    one of its anchors."""
    rate = _rate_method(loaded)
    return f"{_backbone(loaded)}-{rate}" if rate else _backbone(loaded)


def metric_name(loaded: LoadedCodec) -> str:
    """The distortion the codec was trained for (``mse`` or ``ms-ssim``); ``mse`` for reference
    state dicts, which carry no config (the released TCM / TCM-VBR models are MSE models)."""
    return str((loaded.config.get("lmbda") or {}).get("distortion") or "mse")


def curve_name(loaded: LoadedCodec) -> str:
    """CompressAI's ``<architecture>-<metric>`` name of the codec's R-D curve."""
    return f"{architecture(loaded)}-{metric_name(loaded)}"


def codec_meta(codec: ImageCodec, checkpoint: str) -> dict[str, Any]:
    """What a ``meta`` block says about one checkpoint (given as a portable path): the keys of
    CompressAI's own results files (``type``, ``opt_metric``, ``train_dataset``), then
    CompressAI-Trainer's, plus the run name and the digest of the weights (what a file coded
    by the model records)."""
    loaded = codec.loaded
    train_dir = (loaded.config.get("data") or {}).get("train_dir")
    return {
        "type": "image",
        "opt_metric": f"{metric_name(loaded)}-rgb",
        "train_dataset": portable_path(train_dir) if train_dir else None,
        "model.source": "checkpoint",
        "model.name": architecture(loaded),
        "model.metric": metric_name(loaded),
        "model.run": loaded.name,
        "model.weights": codec.id.digest.hex(),
        "criterion.lmbda": list(loaded.lmbdas),
        "paths.model_checkpoint": checkpoint,
    }


def dataset_meta(source: str | PathLike, num_images: int, device: torch.device) -> dict:
    """The test set (its folder's name, as CompressAI's ``dataset``, and portable path) and
    the machine side of a ``meta`` block (``device`` as CompressAI writes it)."""
    return {
        "dataset": Path(source).name if source else None,
        "dataset.path": portable_path(source) if source else None,
        "dataset.num_images": num_images,
        "device": device.type,
        "misc.num_threads": torch.get_num_threads(),
    }


@cache
def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checkout's commit, ``-dirty`` appended when tracked files differ from it; None
    outside a git checkout (an installed wheel) or without git."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(root), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def portable_text(text: str) -> str:
    """``text`` with every absolute path replaced by its :func:`~lae_vbr.paths.portable_path`."""
    return _ABSOLUTE.sub(lambda m: portable_path(m.group(0)), text)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced a file (``sys.argv`` by default), paths made portable."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).is_absolute():
        argv[0] = portable_path(argv[0])
    return shlex.join(portable_text(a) for a in argv)


def run_meta(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The run's part of a ``meta`` block: package version, git commit, command, UTC date."""
    return {
        "lae_vbr.version": __version__,
        "git.commit": git_commit(),
        "command": command_line(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def merge_meta(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``meta`` for a curve made of several (fixed-rate runs merged): a key whose values
    agree keeps the value, one whose values differ gets the list of them in curve order (as
    CompressAI-Trainer's ``meta_`` does for an evaluation over several models)."""
    keys = list(dict.fromkeys(k for m in metas for k in m))
    merged: dict[str, Any] = {}
    for key in keys:
        values = [m.get(key) for m in metas]
        merged[key] = values[0] if all(v == values[0] for v in values) else values
    return merged
