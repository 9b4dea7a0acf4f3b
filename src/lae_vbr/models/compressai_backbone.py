"""CompressAI's image codecs as backbones, with the any-size coding API of :class:`TCM`.

CompressAI's zoo models need image sides that are multiples of 64 and do not report the image
size. :class:`CompressAIBackbone` builds any of its hyperprior models by registry name
(``bmshj2018-hyperprior``, ``mbt2018-mean``, ``mbt2018``, ``cheng2020-anchor``, their ``-vbr``
variants, ...) and adds, in this one place, what all codecs of this project share: inputs are
replicate-padded to ``pad_multiple`` and outputs cropped back, ``compress`` returns
``image_size`` and ``decompress`` accepts it. The inner model's ``g_a``/``g_s`` are exposed, so
:class:`~lae_vbr.models.vbr.VariableRateCodec` wraps it like TCM, and its state-dict keys stay
unprefixed, so CompressAI checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from compressai.models import CompressionModel
from compressai.registry import MODELS
from torch import Tensor, nn

from .padding import crop_image, pad_image
from .state_dict import register_entropy_buffer_resizing

__all__ = ["CompressAIBackbone"]

_INNER = "model."


class CompressAIBackbone(CompressionModel):
    """A CompressAI hyperprior codec (two strings per image: y and z) of any image size.

    Args:
        architecture: a name of ``compressai.registry.MODELS``, e.g. ``"mbt2018-mean"``.
        **kwargs: the model's constructor arguments (``N``, ``M``, ...).

    Extra positional/keyword arguments of ``forward``/``compress``/``decompress`` (e.g. the
    rate arguments of CompressAI's variable-rate models) are passed through.
    """

    #: g_a downsamples by 16 and h_a by 4: z needs sides that are multiples of 64 pixels.
    pad_multiple = 64

    def __init__(self, architecture: str, **kwargs: Any) -> None:
        super().__init__()
        if architecture not in MODELS:
            known = ", ".join(sorted(MODELS))
            raise ValueError(f"unknown CompressAI model {architecture!r} (known: {known})")
        self.architecture = architecture
        self.kwargs = dict(kwargs)
        self.model = MODELS[architecture](**kwargs)
        missing = [n for n in ("g_a", "g_s", "h_a") if not hasattr(self.model, n)]
        if missing:
            raise TypeError(
                f"{architecture} has no {'/'.join(missing)}: only hyperprior models (a y and a "
                "z string per image) can be used as backbones"
            )
        # Registered before the buffer resizing, which must see the nested keys.
        self.register_state_dict_post_hook(_flatten_inner_keys)
        self.register_load_state_dict_pre_hook(_nest_inner_keys)
        register_entropy_buffer_resizing(self)

    @property
    def g_a(self) -> nn.Module:
        return self.model.g_a

    @property
    def g_s(self) -> nn.Module:
        return self.model.g_s

    @property
    def M(self) -> int:  # noqa: N802 - CompressAI's name for the latent width
        return int(self.model.M)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> dict:
        height, width = x.shape[-2:]
        out = dict(self.model(pad_image(x, self.pad_multiple), *args, **kwargs))
        out["x_hat"] = crop_image(out["x_hat"], height, width)
        return out

    def compress(self, x: Tensor, *args: Any, **kwargs: Any) -> dict:
        height, width = x.shape[-2:]
        out = dict(self.model.compress(pad_image(x, self.pad_multiple), *args, **kwargs))
        out["shape"] = tuple(out["shape"])
        out["image_size"] = (height, width)
        return out

    def decompress(
        self,
        strings: Sequence[Sequence[bytes]],
        shape: Sequence[int],
        *args: Any,
        image_size: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> dict:
        """Decode ``[y_strings, z_strings]``; crop to ``image_size`` if given."""
        out = dict(self.model.decompress(list(strings), tuple(shape), *args, **kwargs))
        if image_size is not None:
            out["x_hat"] = crop_image(out["x_hat"], *image_size)
        return out


def _flatten_inner_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    inner = prefix + _INNER
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _nest_inner_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if not rest.startswith(_INNER):
            state_dict[prefix + _INNER + rest] = state_dict.pop(key)
