"""Building codecs from config and loading them from any supported checkpoint.

Three kinds of files are understood, all read with ``weights_only=True``:

* this project's Lightning checkpoints and exported codec bundles, which carry the composed
  Hydra config under ``hyper_parameters.cfg`` (the model is rebuilt from it);
* plain reference state dicts (LIC_TCM / VBR_work releases), whose architecture is inferred
  from the tensor shapes (TCM or TCM-VBR, N, M, slices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lae_vbr.atomic import atomic_path
from lae_vbr.description import CodecDescription, DescriptionError
from lae_vbr.rate_axis import PAPER_MSE_LMBDAS, RateAxis

from .composed import ComposedCodec, LearnedCodec
from .gain_vbr import GainVariableRate
from .state_dict import Checkpoint, CheckpointError, normalize_state_dict, read_checkpoint
from .tcm import TCM
from .vbr import TCMVBR, VariableRateCodec

__all__ = [
    "PAPER_MSE_LMBDAS",
    "LoadedCodec",
    "build_codec",
    "codec_from_reference_state_dict",
    "load_codec",
    "save_codec_bundle",
]


#: A rate method: builds the model from the fixed-rate backbone and the size of the λ set
#: (a ``_partial_`` config of ``model/rate``, e.g. VariableRateCodec or GainVariableRate.around).
RateMethod = Callable[..., LearnedCodec]


def build_codec(
    backbone: ComposedCodec,
    rate: RateMethod | None = None,
    num_lmbdas: int = len(PAPER_MSE_LMBDAS),
    lae: Mapping[str, Any] | None = None,
) -> LearnedCodec:
    """The backbone alone (fixed rate, ``rate=None``) or ``rate(backbone, num_lmbdas=…)``.

    ``lae`` is the configuration of checkpoints written before the ``model/rate`` group
    (``enabled``, ``method``, ``encoder``, ``decoder``, ``contextual``, ``layers``,
    ``latent_channels``, ``lmbdas``); it is translated, so those checkpoints still load.
    """
    if not rate and lae is not None:
        rate = _legacy_rate_method(lae)
    if not rate:  # model/rate=fixed is an empty node
        return backbone
    return rate(backbone, num_lmbdas=int(num_lmbdas))


def _legacy_rate_method(lae: Mapping[str, Any]) -> RateMethod | None:
    if not lae.get("enabled", True):
        return None
    method = lae.get("method", "lae")
    if method == "gain":
        return partial(GainVariableRate.around, lmbdas=[float(v) for v in lae["lmbdas"]])
    if method != "lae":
        raise CheckpointError(f"unknown rate method {method!r} in the checkpoint's config")
    return partial(
        VariableRateCodec,
        latent_channels=lae.get("latent_channels"),
        encoder_lae=bool(lae.get("encoder", True)),
        decoder_lae=bool(lae.get("decoder", True)),
        contextual=bool(lae.get("contextual", True)),
        lae_layers=int(lae.get("layers", 2)),
    )


@dataclass
class LoadedCodec:
    """A codec ready for coding, with what a user needs to drive it."""

    model: LearnedCodec
    lmbdas: list[float]
    name: str
    config: dict = field(default_factory=dict)

    @property
    def variable_rate(self) -> bool:
        return self.model.variable_rate

    @property
    def rate_axis(self) -> RateAxis:
        """The rate settings the model takes (every rate question is asked of it)."""
        return RateAxis(self.name, self.model.num_lmbdas, tuple(self.lmbdas))


def codec_from_reference_state_dict(
    state_dict: Mapping[str, Tensor], num_lmbdas: int = len(PAPER_MSE_LMBDAS)
) -> LearnedCodec:
    """TCM-VBR when the tensors have an encoder-side LAE, TCM otherwise, with the
    architecture the tensors imply, loaded."""
    sd = normalize_state_dict(state_dict)
    if any(k.startswith("modnet_ga.") for k in sd):
        return TCMVBR.from_state_dict(sd, num_lmbdas=num_lmbdas)
    return TCM.from_state_dict(sd)


def load_codec(path: str | PathLike, map_location: str | torch.device = "cpu") -> LoadedCodec:
    """Load a codec from a checkpoint file; raises :class:`CheckpointError` with a clear
    message when the file is missing or unusable."""
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    cfg = checkpoint.config
    if cfg is None and checkpoint.description is None:
        model = codec_from_reference_state_dict(checkpoint.state_dict)
        lmbdas = list(PAPER_MSE_LMBDAS)
        name = "tcm-vbr" if model.variable_rate else "tcm"
        return LoadedCodec(model.eval(), lmbdas, f"{name}:{path.stem}", {})
    description = describe_checkpoint(checkpoint, path.stem)
    if description is not None:
        model = description.build()
        lmbdas, name = list(description.lmbdas), description.name or path.stem
    else:  # a model this project does not name (a user's own class): its config builds it
        from hydra.utils import instantiate

        model = instantiate(cfg["model"])
        lmbdas = [float(v) for v in cfg["lmbda"]["values"]]
        name = str(cfg.get("run_name") or cfg.get("task_name") or path.stem)
    model.load_state_dict(checkpoint.state_dict)
    return LoadedCodec(model.eval(), lmbdas, name, cfg or {})


def describe_checkpoint(checkpoint: Checkpoint, default_name: str) -> CodecDescription | None:
    """The codec description a checkpoint carries, or the one its config translates to (older
    files); None for a config naming a model part this project does not know."""
    if checkpoint.description is not None:
        return CodecDescription.from_dict(checkpoint.description)
    try:
        return CodecDescription.from_config(checkpoint.config or {}, default_name)
    except DescriptionError:
        return None


def save_codec_bundle(
    path: str | PathLike, model: nn.Module, cfg: Mapping[str, Any], half: bool = False
) -> Path:
    """Write a slim, self-describing codec file that :func:`load_codec` reads back.

    ``cfg`` needs ``model`` (the instantiable model config) and ``lmbda.values``. With
    ``half=True`` learned weights are stored in fp16 (they are cast back on load); buffers stay
    float32: they are small, and some are constants fp16 cannot hold (the 1e-9 likelihood
    bound would become 0, and Σ −log₂ likelihood infinite).
    """
    if "model" not in cfg or "values" not in cfg.get("lmbda", {}):
        raise ValueError("cfg needs 'model' and 'lmbda.values' to rebuild the codec")
    weights = {id(p) for p in model.parameters()}
    state = {
        k: (v.half() if half and id(v) in weights else v).detach().cpu().clone()
        for k, v in model.state_dict(keep_vars=True).items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = {"state_dict": state, "hyper_parameters": {"cfg": dict(cfg)}}
    description = describe_config(cfg)
    if description is not None:
        contents["codec"] = description
    with atomic_path(path) as tmp:
        torch.save(contents, tmp)
    return path


def describe_config(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The codec description (a plain dict, as checkpoints store it) of the model a composed
    config builds; None for a model this project does not name."""
    try:
        return CodecDescription.from_config(cfg).to_dict()
    except DescriptionError:
        return None
