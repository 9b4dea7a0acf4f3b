"""Codec models as an explicit composition: ``g_a → [encoder LAE] → latent codec →
[decoder LAE] → g_s``.

:class:`LearnedCodec` is what every model of the project shares with its users: CompressAI's
``forward`` / ``compress`` / ``decompress`` API taking one rate argument, a λ index (see
:mod:`lae_vbr.models.rate`), and any image size (inputs are replicate-padded to
``pad_multiple`` and outputs cropped back). :class:`ComposedCodec` writes the data path out
once; TCM, CompressAI's hyperprior models and their variable-rate versions are all built from
it, so training, compression, latent refinement and the R-λ model work on each of them.

CompressAI conventions, and where this differs:

* ``model(x)`` and ``model.compress(x)`` without a rate use :attr:`default_lmbda_idx`, the
  highest trained λ (the best quality; a fixed-rate model's only one).
* ``compress`` returns ``{"strings": [y_strings, z_strings], "shape": (height, width)}``:
  ``shape`` is the *image* size, from which the decoder derives z's size, so
  ``model.decompress(out["strings"], out["shape"])`` returns an image of the size that was
  compressed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from compressai.models import CompressionModel
from torch import Tensor, nn

from lae_vbr.rate_axis import LATENT_STRIDE

from .analysis import LatentAnalysis
from .banded import run_layers_in_bands
from .banded_grad import synthesise
from .latent_codec import ARITHMETIC, DEFAULT_ARITHMETIC, in_arithmetic
from .padding import crop_image, pad_image
from .rans import SymbolsMismatchError
from .rate import LambdaIndex, RateError, is_rate_map, lmbda_input
from .state_dict import flatten_child_keys, register_entropy_buffer_resizing

__all__ = ["Z_STRIDE", "ComposedCodec", "LearnedCodec", "Shape", "Strings"]

#: What ``compress`` returns and ``decompress`` takes: ``[y_strings, z_strings]``.
Strings = Sequence[Sequence[bytes]]
#: The image size (height, width) that ``compress`` returns as ``shape``.
Shape = Sequence[int]

#: Downsampling from the padded image to z: 16 in g_a, 4 in the hyper-analysis.
Z_STRIDE = 64


class LearnedCodec(CompressionModel):
    """The rate interface and padding geometry shared by every codec of the project.

    Args:
        pad_multiple: image sides are padded to a multiple of this before coding.
        num_lmbdas: size of the trained λ set; 1 for a fixed-rate model.
    """

    #: How the model can compute its entropy parameters when coding, the preferred last
    #: (see :data:`~.latent_codec.ARITHMETIC`).
    arithmetics: tuple[str, ...] = ("float32", DEFAULT_ARITHMETIC)

    def __init__(self, pad_multiple: int, num_lmbdas: int = 1) -> None:
        super().__init__()
        if num_lmbdas < 1:
            raise RateError(f"a codec needs at least one trained λ, got num_lmbdas={num_lmbdas}")
        self.pad_multiple = int(pad_multiple)
        self.num_lmbdas = int(num_lmbdas)

    @property
    def variable_rate(self) -> bool:
        """Whether the model takes a rate setting (several trained λ)."""
        return self.num_lmbdas > 1

    @property
    def has_rate_model(self) -> bool:
        """Whether :meth:`analyse` gives Σ log₂ m of an encoder-side LAE (the R-λ model and
        the rate and quality control built on it)."""
        return False

    @property
    def can_refine(self) -> bool:
        """Whether latent refinement (DLM) can run on the model."""
        return False

    @property
    def takes_rate_map(self) -> bool:
        """Whether the model takes a λ-index map (one index per latent position, for
        region-of-interest coding) as well as one index per image."""
        return False

    def no_rate_map_error(self) -> RateError:
        """Why this model refuses a λ-index map."""
        if not self.variable_rate:
            why = "it is a fixed-rate model (one λ)"
        else:
            why = "its rate is set inside the model for a whole image (no LAE mask to vary)"
        return RateError(f"{type(self).__name__} cannot code with a quality map: {why}")

    def analyse(self, x: Tensor) -> LatentAnalysis:
        """The model's analysis of images ``x`` (B, 3, H, W), asked at any rate setting (see
        :class:`~.analysis.LatentAnalysis`); RateError when the model cannot be analysed."""
        raise RateError(
            f"{type(self).__name__} codes inside its own model (e.g. the gain-based peer): it "
            "has no separate analysis for rate control, the R-λ model or latent refinement"
        )

    def no_rate_model_error(self) -> RateError:
        """Why the R-λ model (and the rate control built on it) does not apply to this model."""
        return RateError(
            "the R-λ model (and rate control on it) needs a variable-rate model with an "
            f"encoder-side LAE; this {type(self).__name__} has none"
        )

    @property
    def default_lmbda_idx(self) -> float:
        """The rate used when none is given: the highest trained λ index."""
        return float(self.num_lmbdas - 1)

    def lmbda_input(self, lmbda_idx: LambdaIndex | None, batch: int) -> Tensor:
        """The checked λ indices, shape (batch,), or (batch, 1, h, w) for a λ-index map, for a
        rate argument (None: the default); RateError for a map the model cannot take."""
        value = self.default_lmbda_idx if lmbda_idx is None else lmbda_idx
        if is_rate_map(value) and not self.takes_rate_map:
            raise self.no_rate_map_error()
        return lmbda_input(value, batch, self.num_lmbdas, self._device())

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        """Height and width of y (where a λ-index map lies) for an image of this size."""
        multiple = self.pad_multiple
        return (
            math.ceil(height / multiple) * multiple // LATENT_STRIDE,
            math.ceil(width / multiple) * multiple // LATENT_STRIDE,
        )

    def z_shape(self, height: int, width: int) -> tuple[int, int]:
        """Height and width of z for an image of this size (padded, then / Z_STRIDE)."""
        multiple = self.pad_multiple
        return (
            math.ceil(height / multiple) * multiple // Z_STRIDE,
            math.ceil(width / multiple) * multiple // Z_STRIDE,
        )

    def _device(self):
        return next(self.parameters()).device

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module``'s loading, without CompressAI's override: that one sizes the CDF
        buffers by testing every module name against every key (0.3 s of a command-line
        start-up for TCM-VBR's 1 200 entries) and matches none of the flat keys of these
        models; the load pre-hook that every subclass registers
        (:func:`~.state_dict.register_entropy_buffer_resizing`) sizes them instead."""
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)


class ComposedCodec(LearnedCodec):
    """``g_a → [encoder LAE] → latent codec → [decoder LAE] → g_s``.

    Args:
        g_a, g_s: the analysis and synthesis transforms.
        latent_codec: hyperprior and entropy model on y (:class:`~.latent_codec.LatentCodec`).
        latent_channels: channels of y (M).
        pad_multiple, num_lmbdas: see :class:`LearnedCodec`.
        modnet_ga, modnet_gs: the encoder-side and decoder-side LAEs (None: left out); named
            as in the reference checkpoints.

    State-dict keys are flat, as in the reference TCM: the latent codec's entries appear
    without their ``latent_codec.`` prefix (``h_a.*``, ``entropy_bottleneck.*``, ...).
    """

    def __init__(
        self,
        g_a: nn.Module,
        latent_codec: nn.Module,
        g_s: nn.Module,
        latent_channels: int,
        pad_multiple: int,
        num_lmbdas: int = 1,
        modnet_ga: nn.Module | None = None,
        modnet_gs: nn.Module | None = None,
    ) -> None:
        super().__init__(pad_multiple, num_lmbdas)
        has_lae = modnet_ga is not None or modnet_gs is not None
        if has_lae and num_lmbdas < 2:
            raise RateError(
                f"a variable-rate model needs at least two λ values, got {num_lmbdas}; "
                "train a fixed-rate model for a single λ"
            )
        self.latent_channels = int(latent_channels)
        flatten_child_keys(self, "latent_codec")
        register_entropy_buffer_resizing(self)
        self.g_a = g_a
        self.modnet_ga = modnet_ga
        self.latent_codec = latent_codec
        self.modnet_gs = modnet_gs
        self.g_s = g_s

    @property
    def has_rate_model(self) -> bool:
        return self.modnet_ga is not None

    @property
    def can_refine(self) -> bool:
        return True

    @property
    def takes_rate_map(self) -> bool:
        return self.modnet_ga is not None or self.modnet_gs is not None

    def analyse(self, x: Tensor) -> LatentAnalysis:
        """``g_a`` once (in row bands, as coding runs it) and the encoder LAE's
        λ-independent context; then anything at any λ index (:class:`~.analysis.LatentAnalysis`)."""
        return LatentAnalysis(self, x)

    # -- the two halves around the latent codec ----------------------------------------------
    def analysis(self, x: Tensor, lmbda: Tensor) -> tuple[Tensor, Tensor | None]:
        """``g_a`` then the encoder-side LAE on a padded batch: ``(y, mask or None)``.

        Without autograd ``g_a`` runs layer by layer in row bands (bit-identical, see
        :mod:`~.banded`), so a large image does not need all of a layer's intermediates at
        once."""
        y = run_layers_in_bands(self.g_a, x)
        if self.modnet_ga is None:
            return y, None
        return self.modnet_ga(y, lmbda)

    def synthesis(self, y_hat: Tensor, lmbda: Tensor) -> Tensor:
        """The decoder-side LAE then ``g_s``: the padded reconstruction (in row bands without
        autograd, as in :meth:`analysis`; with frozen weights on a large image, its gradient in
        row bands too: :mod:`~.banded_grad`)."""
        if self.modnet_gs is not None:
            y_hat, _ = self.modnet_gs(y_hat, lmbda)
        return synthesise(self.g_s, y_hat)

    def transforms_to_channels_last(self) -> ComposedCodec:
        """Store ``g_a``, the LAEs and ``g_s`` channels-last (NHWC); returns the model.

        On the CPU, oneDNN convolves NHWC maps without reordering them to and from its own
        layout, and the window attention's NHWC permutes become views: about 1.2× faster
        transforms (``experiments/bench``). A convolution with NHWC weights returns an NHWC
        map, so activations follow without converting the input. The latent codec keeps its
        layout: in the reproducible float64 arithmetic its convolutions are PyTorch's own,
        which are no faster on NHWC.
        """
        for part in (self.g_a, self.modnet_ga, self.modnet_gs, self.g_s):
            if part is not None:
                part.to(memory_format=torch.channels_last)
        return self

    def backbone_modules(self) -> list[nn.Module]:
        """The fixed-rate codec's parts (what LAE training stages freeze)."""
        return [self.g_a, self.latent_codec, self.g_s]

    # -- CompressAI API --------------------------------------------------------------------
    def forward(self, x: Tensor, lmbda_idx: LambdaIndex | None = None) -> dict:
        """Training/evaluation pass: ``x_hat``, likelihoods of y and z, y (after the encoder
        LAE), z and the λ indices used."""
        lmbda = self.lmbda_input(lmbda_idx, x.shape[0])
        y, _ = self.analysis(pad_image(x, self.pad_multiple), lmbda)
        coded = self.code_latent_float32(y)
        x_hat = self.synthesis(coded["y_hat"], lmbda)
        return {
            "x_hat": crop_image(x_hat, *x.shape[-2:]),
            "likelihoods": coded["likelihoods"],
            "y": y,
            "z": coded["z"],
            "lmbda_idx": lmbda,
        }

    def code_latent_float32(self, y: Tensor) -> dict:
        """The latent codec's training/evaluation pass, outside any autocast region.

        Under mixed precision (``trainer.precision=bf16-mixed``) the transforms run in bf16,
        but the entropy model's parameters and likelihoods must not: bf16 keeps 8 bits of
        mantissa, which would blur the rate term and the scales that pick each CDF. A bf16
        latent is widened first; float32 and float64 latents pass unchanged.
        """
        if y.dtype in (torch.float16, torch.bfloat16):
            y = y.float()
        with torch.autocast(y.device.type, enabled=False):
            return self.latent_codec(y)

    def compress(
        self, x: Tensor, lmbda_idx: LambdaIndex | None = None, arithmetic: str = DEFAULT_ARITHMETIC
    ) -> dict:
        """Entropy-code a batch: one y and one z string per image; ``shape`` is the image
        size; ``symbols_crc`` one CRC-32 of the coded symbols per image (to check a decode
        against). Variable-rate models also return the λ indices and, with an encoder-side
        LAE, the mean natural log of its mask per image (the quantity of the R-λ model).
        ``arithmetic`` (see :data:`~.latent_codec.ARITHMETIC`) must be given to decompress."""
        lmbda = self.lmbda_input(lmbda_idx, x.shape[0])
        y, mask = self.analysis(pad_image(x, self.pad_multiple), lmbda)
        out = {**self.code_latent(y, arithmetic=arithmetic), "shape": tuple(x.shape[-2:])}
        if self.variable_rate:
            out["lmbda_idx"] = lmbda
        if mask is not None:
            out["log_mask_mean"] = mask.log().mean(dim=(1, 2, 3))
        return out

    def code_latent(
        self,
        y: Tensor,
        z: Tensor | None = None,
        arithmetic: str = DEFAULT_ARITHMETIC,
        converted: nn.Module | None = None,
    ) -> dict:
        """Entropy-code latents (after the encoder LAE; z: a given hyper-latent, e.g. refined)
        with the latent codec in ``arithmetic``: ``strings``, ``symbols_crc``,
        ``arithmetic``. ``converted``: ``in_arithmetic(self.latent_codec, arithmetic)`` made
        once by a caller that codes many times (rate control), since the conversion copies the
        latent codec (a tenth of an encode on the demo model)."""
        dtype = ARITHMETIC[arithmetic]
        codec = converted if converted is not None else in_arithmetic(self.latent_codec, arithmetic)
        coded = codec.compress(y.to(dtype), None if z is None else z.to(dtype))
        return {
            "strings": coded["strings"],
            "symbols_crc": coded["symbols_crc"],
            "arithmetic": arithmetic,
        }

    def decompress(
        self,
        strings: Strings,
        shape: Shape,
        lmbda_idx: LambdaIndex | None = None,
        arithmetic: str = DEFAULT_ARITHMETIC,
        symbols_crc: Sequence[int] | None = None,
    ) -> dict:
        """Decode ``[y_strings, z_strings]`` of images of size ``shape`` (height, width):
        ``x_hat`` and ``symbols_crc`` of what was read. Given the encoder's ``symbols_crc``,
        a mismatch raises :class:`~.rans.SymbolsMismatchError` before the synthesis runs."""
        height, width = (int(v) for v in shape)
        lmbda = self.lmbda_input(lmbda_idx, len(strings[0]))
        codec = in_arithmetic(self.latent_codec, arithmetic)
        decoded = codec.decompress(strings, self.z_shape(height, width))
        if symbols_crc is not None and list(decoded["symbols_crc"]) != list(symbols_crc):
            raise SymbolsMismatchError(
                "the decoded symbols differ from the encoded ones (checksum mismatch)"
            )
        y_hat = decoded["y_hat"].to(next(self.g_s.parameters()).dtype)
        x_hat = self.synthesis(y_hat, lmbda).clamp_(0, 1)
        return {"x_hat": crop_image(x_hat, height, width), "symbols_crc": decoded["symbols_crc"]}

    # -- R-λ model -------------------------------------------------------------------------
    @torch.no_grad()
    def log2_mask_sum(
        self, y: Tensor, lmbda_idx: LambdaIndex, context: Tensor | None = None
    ) -> Tensor:
        """Σ log₂ m of the encoder-side LAE per image, from the raw ``g_a`` output ``y``.

        One LAE evaluation, no entropy coding, so it can be swept over many λ; ``context``
        (``modnet_ga.mask.context(y)``) saves the λ-independent part of each evaluation.
        """
        if self.modnet_ga is None:
            raise self.no_rate_model_error()
        lmbda = self.lmbda_input(lmbda_idx, y.shape[0])
        return self.modnet_ga.log_mask(y, lmbda, context).sum(dim=(1, 2, 3)) / math.log(2)
