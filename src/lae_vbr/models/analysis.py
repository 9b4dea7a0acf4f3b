"""One image analysed once, asked for anything at any rate: the model API of every coding path.

``y = g_a(x)`` does not depend on λ (the encoder-side LAE comes after it), and neither does the
LAE's contextual branch, so rate control, quality control, the R-λ model and latent refinement
run the analysis transform once and then ask, at each λ index they try, for one of:

* :meth:`LatentAnalysis.latent`: y after the encoder-side LAE (what is quantised);
* :meth:`LatentAnalysis.log2_mask_sum`: Σ log₂ m of the encoder-side LAE, the quantity of the
  logarithmic R-λ model (a few elementwise operations per index);
* :meth:`LatentAnalysis.coded_bits`: what the coder's own tables charge for y and z, without
  coding;
* :meth:`LatentAnalysis.reconstruct`: the image the decoder will return, without coding;
* :meth:`LatentAnalysis.compress`: the real streams, byte for byte those of ``model.compress``;
* :meth:`LatentAnalysis.refinement_start` and :meth:`LatentAnalysis.decode_relaxed`: the
  latents that refinement moves and the differentiable decoder path it moves them through.

The analysis runs as plain coding does (``g_a`` in row bands without autograd, see
:mod:`~.banded`), so asking costs no more memory than compressing: on a 3840×2160 photo the
callers above used to run ``g_a`` whole and peaked at 2.4× a plain compress's memory.
Models answer capability questions themselves (``has_rate_model``, ``can_refine``); a model
that cannot be analysed (the gain-based peer, which codes inside CompressAI's model) says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lae_vbr.heap import release_freed_memory

from .banded import run_layers_in_bands
from .banded_grad import MIN_PIXELS
from .latent_codec import in_arithmetic
from .padding import crop_image, pad_image
from .rate import LambdaIndex

if TYPE_CHECKING:
    from .composed import ComposedCodec

__all__ = ["LatentAnalysis"]


class LatentAnalysis:
    """A batch of images (usually one) after ``g_a`` and the LAE's λ-independent context.

    Made by :meth:`~.composed.ComposedCodec.analyse`; holds no autograd graph, so the latents
    it gives can be made free variables (latent refinement).

    Args:
        model: the composed codec.
        x: images, (B, 3, H, W) in [0, 1], on the model's device; padded as the codec pads.
    """

    def __init__(self, model: ComposedCodec, x: Tensor) -> None:
        self.model = model
        self.image_size = (int(x.shape[-2]), int(x.shape[-1]))
        self.batch = int(x.shape[0])
        with torch.no_grad():
            self.y = run_layers_in_bands(model.g_a, pad_image(x, model.pad_multiple))
            encoder = model.modnet_ga
            #: the encoder LAE's λ-independent part (None without one or without its branch)
            self.context = None if encoder is None else encoder.mask.context(self.y)
        # the analysis' freed maps: not kept for the synthesis that may follow (other sizes)
        release_freed_memory()

    @property
    def num_pixels(self) -> int:
        """Pixels of one image (as the file's bit rate counts them)."""
        return self.image_size[0] * self.image_size[1]

    @property
    def num_latent_elements(self) -> int:
        """Elements of one image's latent y (Σ log₂ m sums over them)."""
        return self.y[0].numel()

    def lmbda(self, lmbda_idx: LambdaIndex | None) -> Tensor:
        """The checked λ input for the batch (the model's range rule)."""
        return self.model.lmbda_input(lmbda_idx, self.batch)

    @torch.no_grad()
    def latent(self, lmbda_idx: LambdaIndex | None) -> Tensor:
        """y after the encoder-side LAE at this index (y itself without one)."""
        encoder = self.model.modnet_ga
        if encoder is None:
            return self.y
        return encoder(self.y, self.lmbda(lmbda_idx), self.context)[0]

    @torch.no_grad()
    def log2_mask_sum(self, lmbda_idx: Sequence[float] | Tensor, chunk: int = 16) -> Tensor:
        """Σ log₂ m of the first image's latent at each of several λ indices (float64, CPU):
        one LAE evaluation per index, batched ``chunk`` at a time, no entropy coding."""
        idx = torch.as_tensor(lmbda_idx, dtype=torch.float32).reshape(-1)
        context = None if self.context is None else self.context[:1]
        sums = []
        for part in idx.split(chunk):
            y = self.y[:1].expand(len(part), -1, -1, -1)
            sums.append(self.model.log2_mask_sum(y, part.to(y.device), context).double().cpu())
        return torch.cat(sums)

    @torch.no_grad()
    def coded_bits(self, lmbda_idx: LambdaIndex | None) -> dict[str, Tensor]:
        """``{"y", "z"}``: per image, the bits the coder spends on each stream, priced with its
        own 16-bit tables (escapes included) without coding."""
        return self.model.latent_codec.coded_bits(self.latent(lmbda_idx))

    @torch.no_grad()
    def reconstruct(self, lmbda_idx: LambdaIndex | None) -> Tensor:
        """The decoded images at this index, (B, 3, H, W) in [0, 1], without coding."""
        lmbda = self.lmbda(lmbda_idx)
        y_hat = self.model.latent_codec(self.latent(lmbda))["y_hat"]
        x_hat = self.model.synthesis(y_hat, lmbda).clamp_(0, 1)
        return crop_image(x_hat, *self.image_size)

    @torch.no_grad()
    def compress(
        self,
        lmbda_idx: LambdaIndex | None,
        arithmetic: str,
        latents: tuple[Tensor, Tensor] | None = None,
        coder: nn.Module | None = None,
    ) -> dict:
        """The real streams at this index: ``strings``, ``symbols_crc``, ``arithmetic`` and
        ``shape`` (the image size), as ``model.compress`` returns them. ``latents``: (y, z) to
        code instead of the analysis' own (refined ones); ``coder``: the latent codec in
        ``arithmetic`` (:meth:`coder`), when a caller codes many times."""
        y, z = (self.latent(lmbda_idx), None) if latents is None else latents
        return {**self.model.code_latent(y, z, arithmetic, coder), "shape": self.image_size}

    def coder(self, arithmetic: str) -> nn.Module:
        """The latent codec in ``arithmetic``: made once by a caller that codes many times,
        since the conversion copies the latent codec (a tenth of an encode on the demo model)."""
        return in_arithmetic(self.model.latent_codec, arithmetic)

    # -- latent refinement --------------------------------------------------------------------
    @torch.no_grad()
    def refinement_start(self, lmbda_idx: LambdaIndex | None) -> tuple[Tensor, Tensor]:
        """The latents refinement starts from: y after the encoder LAE and z of it."""
        y = self.latent(lmbda_idx)
        return y, self.model.latent_codec.hyper_analysis(y)

    def _code_relaxed(self, y: Tensor, z: Tensor) -> dict:
        """The latent codec with straight-through rounding. Above MIN_PIXELS its networks'
        autograd intermediates (the slice transforms' attention: 6.0 GB at 2048×2048) are not
        kept: the slice loop's calls are recomputed one at a time in the backward pass (the
        same values: the networks are deterministic; see :func:`~.entropy.run_networks`)."""
        recompute = self.num_pixels >= MIN_PIXELS
        return self.model.latent_codec(y, z, straight_through=True, recompute=recompute)

    def decode_relaxed(
        self, y: Tensor, z: Tensor, lmbda_idx: LambdaIndex | None, bfloat16: bool = False
    ) -> dict:
        """Differentiable coding of (y, z): the latent codec with straight-through rounding,
        then the decoder path (under bfloat16 autocast if ``bfloat16``). ``{"x_hat"``: the
        cropped image in [0, 1] in y's dtype, ``"likelihoods"}``.

        Above :data:`MIN_PIXELS` the heap's freed memory is given back to the system between
        the passes, whose maps differ in size (the latent codec's at the latent's resolution,
        ``g_s``'s up to the image's): kept, one pass's freed maps leave holes under the
        next one's and the peaks add up. On a 3840×2160 photo with TCM-VBR N=64 (one step,
        ``experiments/bench/probe_refine_phases.py``) the latent codec's forward pass left
        2.5 GB of them, and ``g_s``'s pass peaked at 6.40 GB with them, 5.89 GB without."""
        phased = self.num_pixels >= MIN_PIXELS
        if phased:
            release_freed_memory()  # the last backward pass's maps (see below)
        coded = self._code_relaxed(y, z)
        if phased:
            release_freed_memory()
            if coded["y_hat"].requires_grad:
                coded["y_hat"].register_hook(_release_before_latent_codec)
        with torch.autocast(y.device.type, torch.bfloat16, enabled=bfloat16):
            x_hat = self.model.synthesis(coded["y_hat"], self.lmbda(lmbda_idx))
        x_hat = crop_image(x_hat.to(y.dtype), *self.image_size).clamp(0, 1)
        return {"x_hat": x_hat, "likelihoods": coded["likelihoods"]}


def _release_before_latent_codec(grad: Tensor) -> None:
    """A gradient hook on the latent codec's output: ``g_s``'s backward pass is done, so its
    freed maps go back to the system before the latent codec's (recomputing) backward pass."""
    release_freed_memory()
