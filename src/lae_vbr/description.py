"""What a checkpoint says its codec is: a small versioned description, read without torch.

Every checkpoint and bundle this project writes carries, next to the weights and the Hydra
config (kept as provenance), a ``codec`` entry such as::

    {"format": 1, "backbone": "mbt2018-mean", "backbone_args": {"N": 64, "M": 128},
     "rate": "lae", "rate_args": {"encoder_lae": true, "decoder_lae": true, ...},
     "lmbdas": [0.001, ...], "distortion": "mse", "name": "demo_wide_..."}

It names models, not Python import paths: the backbone by its CompressAI registry name (``tcm``
is registered there by this package), the rate method by this project's name (``fixed``,
``lae``, ``gain``). :meth:`CodecDescription.build` turns it into a model through the registry;
:meth:`CodecDescription.from_config` is the one translator from the Hydra configs older
checkpoints carry alone. Pure Python: the command line reads a checkpoint's rate settings from
it in milliseconds (:mod:`lae_vbr.codec.peek`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lae_vbr.errors import LaeVbrError
from lae_vbr.rate_axis import RateAxis

if TYPE_CHECKING:
    from lae_vbr.models.composed import LearnedCodec

__all__ = ["DESCRIPTION_FORMAT", "RATE_METHODS", "CodecDescription", "DescriptionError"]

#: The version of the description written now; readers refuse newer ones by name.
DESCRIPTION_FORMAT = 1
RATE_METHODS = ("fixed", "lae", "gain")

#: The import paths of older configs, by the names the descriptions use (the one translator).
_BACKBONE_CLASSES = {"TCM": "tcm", "CompressAIBackbone": None}  # None: ``architecture`` names it
_RATE_CLASSES = {"VariableRateCodec": "lae", "GainVariableRate.around": "gain"}
#: The LAE options of configs written before the ``model/rate`` group (``model.lae``).
_LEGACY_LAE_OPTIONS = {
    "latent_channels": "latent_channels",
    "encoder": "encoder_lae",
    "decoder": "decoder_lae",
    "contextual": "contextual",
    "layers": "lae_layers",
}


class DescriptionError(LaeVbrError):
    """A codec description (or config) this version cannot turn into a model."""


@dataclass(frozen=True)
class CodecDescription:
    """A codec: its fixed-rate backbone, the rate method around it, the λ set it was trained
    for (one λ: fixed rate), and its name."""

    backbone: str
    backbone_args: Mapping[str, Any] = field(default_factory=dict)
    rate: str = "fixed"
    rate_args: Mapping[str, Any] = field(default_factory=dict)
    lmbdas: tuple[float, ...] = ()
    distortion: str = "mse"
    name: str = ""

    def __post_init__(self) -> None:
        if self.rate not in RATE_METHODS:
            raise DescriptionError(f"unknown rate method {self.rate!r} (known: {RATE_METHODS})")
        if self.rate != "fixed" and len(self.lmbdas) < 2:
            raise DescriptionError(f"a {self.rate} model needs at least two λ values")

    @property
    def rate_axis(self) -> RateAxis:
        """The rate settings the codec takes."""
        count = 1 if self.rate == "fixed" else len(self.lmbdas)
        return RateAxis(repr(self.name), count, tuple(self.lmbdas))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DESCRIPTION_FORMAT,
            "backbone": self.backbone,
            "backbone_args": dict(self.backbone_args),
            "rate": self.rate,
            "rate_args": dict(self.rate_args),
            "lmbdas": [float(v) for v in self.lmbdas],
            "distortion": self.distortion,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecDescription:
        """A description as :meth:`to_dict` wrote it; DescriptionError when it is from a
        newer version or malformed."""
        version = data.get("format")
        if not isinstance(version, int) or version > DESCRIPTION_FORMAT:
            raise DescriptionError(
                f"the checkpoint describes its codec in format {version!r}; this lae-vbr reads "
                f"format {DESCRIPTION_FORMAT} and older: upgrade lae-vbr"
            )
        try:
            return cls(
                backbone=str(data["backbone"]),
                backbone_args=dict(data.get("backbone_args") or {}),
                rate=str(data.get("rate", "fixed")),
                rate_args=dict(data.get("rate_args") or {}),
                lmbdas=tuple(float(v) for v in data.get("lmbdas") or ()),
                distortion=str(data.get("distortion", "mse")),
                name=str(data.get("name", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DescriptionError(f"malformed codec description ({err})") from None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], default_name: str = "") -> CodecDescription:
        """The description of the model a composed Hydra config builds (``model``, ``lmbda``,
        ``run_name``): what older checkpoints carry alone."""
        model, lmbda = cfg.get("model"), cfg.get("lmbda") or {}
        if not isinstance(model, Mapping) or not isinstance(model.get("backbone"), Mapping):
            raise DescriptionError("the checkpoint's config has no model.backbone")
        backbone, backbone_args = _backbone_of(model["backbone"])
        rate, rate_args = _rate_of(model)
        values = lmbda.get("values") if isinstance(lmbda, Mapping) else None
        return cls(
            backbone=backbone,
            backbone_args=backbone_args,
            rate=rate,
            rate_args=rate_args,
            lmbdas=tuple(float(v) for v in values or ()),
            distortion=str(lmbda.get("distortion", "mse")),
            name=str(cfg.get("run_name") or cfg.get("task_name") or default_name),
        )

    def build(self) -> LearnedCodec:
        """A fresh model (untrained weights) of this description, through CompressAI's
        registry."""
        from compressai.registry import MODELS

        from lae_vbr.models import (
            CompressAIBackbone,
            GainVariableRate,
            LearnedCodec,
            VariableRateCodec,
        )

        own = MODELS.get(self.backbone)
        if isinstance(own, type) and issubclass(own, LearnedCodec):
            backbone = own(**self.backbone_args)
        else:
            backbone = CompressAIBackbone(self.backbone, **self.backbone_args)
        if self.rate == "lae":
            return VariableRateCodec(backbone, num_lmbdas=len(self.lmbdas), **self.rate_args)
        if self.rate == "gain":
            return GainVariableRate.around(backbone, self.lmbdas, len(self.lmbdas))
        return backbone


def _target_class(node: Mapping[str, Any]) -> str:
    """The class (and method) an older config's ``_target_`` names, without its module."""
    target = str(node.get("_target_", ""))
    for name in (*_BACKBONE_CLASSES, *_RATE_CLASSES):
        if target == name or target.endswith(f".{name}"):
            return name
    raise DescriptionError(f"the checkpoint's config names an unknown model part {target!r}")


def _arguments(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if not k.startswith("_")}


def _backbone_of(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    args = _arguments(node)
    name = _BACKBONE_CLASSES[_target_class(node)]
    return (name, args) if name else (str(args.pop("architecture")), args)


def _rate_of(model: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    rate = model.get("rate")
    if isinstance(rate, Mapping) and rate:
        method = _RATE_CLASSES[_target_class(rate)]
        args = _arguments(rate)
        args.pop("lmbdas", None)  # the gain peer's: the description's own λ set
        return method, (args if method == "lae" else {})
    legacy = model.get("lae")
    if "rate" in model or not isinstance(legacy, Mapping) or not legacy.get("enabled", True):
        return "fixed", {}
    method = str(legacy.get("method", "lae"))
    if method not in ("lae", "gain"):
        raise DescriptionError(f"unknown rate method {method!r} in the checkpoint's config")
    if method == "gain":
        return "gain", {}
    return "lae", {new: legacy[old] for old, new in _LEGACY_LAE_OPTIONS.items() if old in legacy}
