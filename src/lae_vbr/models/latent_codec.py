"""Latent codecs: everything between the analysis and the synthesis transform, as one module.

A latent codec takes the latent ``y`` (what ``g_a`` and the encoder-side LAE produced) and
returns its quantised value ``y_hat`` with the likelihoods, entropy-codes it to strings, or
decodes strings back to ``y_hat``; CompressAI's ``latent_codecs`` have the same shape. The
codec models (:mod:`lae_vbr.models.composed`) write their data path around it::

    g_a → [encoder LAE] → latent codec → [decoder LAE] → g_s

:class:`TCMLatentCodec` is TCM's: a hyperprior (``h_a``, ``h_mean_s``, ``h_scale_s``, the
entropy bottleneck) and the channel-wise autoregressive Gaussian model with SWAtten and LRP,
run by the one slice loop of :func:`~lae_vbr.models.entropy.run_slices`. CompressAI's
hyperprior models have theirs in :mod:`lae_vbr.models.compressai_backbone`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import torch
from compressai.layers import (
    ResidualBlockUpsample,
    conv3x3,
    subpel_conv3x3,
)
from torch import Tensor, nn

from .compressai_compat import bottleneck_medians
from .entropy import (
    DecodeStep,
    EncodeStep,
    LikelihoodStep,
    bottleneck_likelihood,
    build_slice_transforms,
    run_networks,
    run_slices,
    ste_round,
)
from .layers import ConvTransBlock, ResidualBlockWithStride
from .rans import (
    CheckedEntropyBottleneck,
    CheckedGaussianConditional,
    bottleneck_coded_bits,
    bottleneck_crcs,
    coded_bits,
)

__all__ = [
    "ARITHMETIC",
    "DEFAULT_ARITHMETIC",
    "LatentCodec",
    "TCMLatentCodec",
    "converted_copy",
    "in_arithmetic",
]

#: How a latent codec computes while coding: everything that decides a symbol's CDF index or
#: the mean it is coded around (hyper-synthesis, slice transforms, LRP) runs in this type.
#: float64 makes the decoder's values equal the encoder's (see docs/bitstream.md); float32 is
#: how files of format version 1 were written.
ARITHMETIC = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_ARITHMETIC = "float64"


class LatentCodec(Protocol):
    """What a codec model needs from its latent codec.

    ``straight_through`` asks for the likelihoods of the rounded values with an identity
    gradient (latent refinement); otherwise training mode adds noise and eval mode rounds, as
    in CompressAI. ``z`` may be given to code a hyper-latent other than ``hyper_analysis(y)``.
    ``recompute`` asks forward not to keep its networks' autograd intermediates but to
    recompute them in the backward pass, one network at a time
    (:func:`~lae_vbr.models.entropy.run_networks`; latent refinement of large images).
    """

    def hyper_analysis(self, y: Tensor) -> Tensor: ...

    def forward(
        self,
        y: Tensor,
        z: Tensor | None = None,
        straight_through: bool = False,
        recompute: bool = False,
    ) -> dict:
        """``{"y_hat", "likelihoods": {"y", "z"}, "z"}``."""
        ...

    def compress(self, y: Tensor, z: Tensor | None = None) -> dict:
        """``{"strings": [y_strings, z_strings], "shape": z_shape, "symbols_crc": [...]}``:
        one CRC-32 of the coded symbols per image, to check a decode against."""
        ...

    def coded_bits(self, y: Tensor) -> dict[str, Tensor]:
        """``{"y", "z"}``: per image, the bits ``compress`` spends on each, without coding
        (the coder's 16-bit tables and escapes; see :func:`~lae_vbr.models.rans.coded_bits`)."""
        ...

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> dict:
        """``{"y_hat", "symbols_crc"}`` from ``[y_strings, z_strings]`` and z's (height,
        width); a stream that cannot be decoded raises
        :class:`~lae_vbr.models.rans.StreamError`."""
        ...


def _hyper_stage(n: int, depth: int, head_dim: int, window: int) -> list[nn.Module]:
    """``depth`` ConvTransBlocks of the hyper transforms, alternating regular/shifted windows."""
    return [
        ConvTransBlock(n, n, head_dim, window, 0.0, "W" if i % 2 == 0 else "SW")
        for i in range(depth)
    ]


class TCMLatentCodec(nn.Module):
    """TCM's hyperprior and slice-wise autoregressive entropy model.

    Args:
        N: width of the hyper transforms' attention blocks (TCM's N).
        M: latent channels.
        num_slices, max_support_slices: the channel slices and how many decoded ones feed
            the next (−1: all).
        hyper_channels: channels of z.
        hyper_depths: ConvTransBlocks in ``h_a`` and in each hyper-synthesis.
        hyper_window_size, hyper_head_dim: their attention.
        window_size, atten_dim, atten_head_dim, slice_hidden: the slice networks (SWAtten and
            the mean / scale / LRP transforms).
    """

    def __init__(
        self,
        N: int,
        M: int,
        num_slices: int,
        max_support_slices: int,
        hyper_channels: int,
        hyper_depths: tuple[int, int],
        hyper_window_size: int,
        hyper_head_dim: int,
        window_size: int,
        atten_dim: int,
        atten_head_dim: int,
        slice_hidden: Sequence[int],
    ) -> None:
        super().__init__()
        self.num_slices = num_slices
        self.max_support_slices = max_support_slices
        # First, as in the reference, so the flattened state-dict order starts with it.
        self.entropy_bottleneck = CheckedEntropyBottleneck(hyper_channels)
        self.h_a = nn.Sequential(
            ResidualBlockWithStride(M, 2 * N, 2),
            *_hyper_stage(N, hyper_depths[0], hyper_head_dim, hyper_window_size),
            conv3x3(2 * N, hyper_channels, stride=2),
        )

        def hyper_synthesis() -> nn.Sequential:
            return nn.Sequential(
                ResidualBlockUpsample(hyper_channels, 2 * N, 2),
                *_hyper_stage(N, hyper_depths[1], hyper_head_dim, hyper_window_size),
                subpel_conv3x3(2 * N, M, 2),
            )

        self.h_mean_s = hyper_synthesis()
        self.h_scale_s = hyper_synthesis()
        transforms = build_slice_transforms(
            M, num_slices, max_support_slices, atten_dim, atten_head_dim, window_size, slice_hidden
        )
        for name, module in transforms.items():
            self.add_module(name, module)
        self.gaussian_conditional = CheckedGaussianConditional(None)

    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self.h_a(y)

    def forward(
        self,
        y: Tensor,
        z: Tensor | None = None,
        straight_through: bool = False,
        recompute: bool = False,
    ) -> dict:
        """Quantise y slice by slice; likelihoods of y and z (see :class:`LatentCodec`)."""
        z = self.hyper_analysis(y) if z is None else z
        z_offset = bottleneck_medians(self.entropy_bottleneck)
        z_hat = ste_round(z - z_offset) + z_offset
        if straight_through:
            z_likelihoods = bottleneck_likelihood(self.entropy_bottleneck, z_hat)
        else:
            _, z_likelihoods = self.entropy_bottleneck(z)
        step = LikelihoodStep(y, self.num_slices, self.gaussian_conditional, straight_through)
        means = run_networks([z_hat], self.h_mean_s, recompute=recompute)
        scales = run_networks([z_hat], self.h_scale_s, recompute=recompute)
        y_hat = run_slices(self, means, scales, y.shape[-2:], step, recompute)
        return {"y_hat": y_hat, "likelihoods": {"y": step.likelihood(), "z": z_likelihoods}, "z": z}

    def compress(self, y: Tensor, z: Tensor | None = None) -> dict:
        """One y string and one z string per image; all slices share the y string."""
        z = self.hyper_analysis(y) if z is None else z
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        step = EncodeStep(y, self.num_slices, self.gaussian_conditional)
        run_slices(self, self.h_mean_s(z_hat), self.h_scale_s(z_hat), y.shape[-2:], step)
        crcs = [
            step.crc(b, c) for b, c in enumerate(bottleneck_crcs(self.entropy_bottleneck, z_hat))
        ]
        return {
            "strings": [step.flush(), z_strings],
            "shape": tuple(z.shape[-2:]),
            "symbols_crc": crcs,
        }

    def coded_bits(self, y: Tensor) -> dict[str, Tensor]:
        """Per image, the bits ``compress`` spends on y and on z, without coding."""
        z_hat, z_bits = bottleneck_coded_bits(self.entropy_bottleneck, self.hyper_analysis(y))
        step = EncodeStep(y, self.num_slices, self.gaussian_conditional)
        run_slices(self, self.h_mean_s(z_hat), self.h_scale_s(z_hat), y.shape[-2:], step)
        y_bits = [
            coded_bits(self.gaussian_conditional, torch.cat(s), torch.cat(i)).sum()
            for s, i in zip(step.symbols, step.indexes, strict=True)
        ]
        return {"y": torch.stack(y_bits), "z": z_bits}

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> dict:
        y_strings, z_strings = strings
        z_hat = self.entropy_bottleneck.decompress(z_strings, tuple(shape))
        y_hw = (z_hat.shape[2] * 4, z_hat.shape[3] * 4)
        step = DecodeStep(y_strings, self.gaussian_conditional)
        y_hat = run_slices(self, self.h_mean_s(z_hat), self.h_scale_s(z_hat), y_hw, step)
        step.finish()
        crcs = [
            step.crc(b, c) for b, c in enumerate(bottleneck_crcs(self.entropy_bottleneck, z_hat))
        ]
        return {"y_hat": y_hat, "symbols_crc": crcs}


def in_arithmetic(latent_codec: nn.Module, arithmetic: str) -> nn.Module:
    """``latent_codec`` computing in ``arithmetic``: itself for float32, else a converted copy
    made for this call (the weights are float32 values, exact in float64; the model is not
    changed)."""
    if arithmetic not in ARITHMETIC:
        raise ValueError(f"unknown arithmetic {arithmetic!r}; use one of {sorted(ARITHMETIC)}")
    dtype = ARITHMETIC[arithmetic]
    if all(p.dtype == dtype for p in latent_codec.parameters()):
        return latent_codec
    return converted_copy(latent_codec, dtype)


def converted_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """What ``copy.deepcopy(module).to(dtype)`` returns, built without deepcopy's walk through
    every module's dozen hook dictionaries (0.1 s of each coding call for TCM's latent codec).

    Each module is copied as ``copy.copy`` does (so CompressAI's entropy models get a fresh
    entropy coder, as with deepcopy), its containers (hook dictionaries, caches) one level
    deep, its parameters and buffers into new tensors (floating point ones in ``dtype``), and
    its submodules the same way. Other attribute values are shared: numbers, strings, tuples,
    and the cached attention masks, which are replaced rather than changed in place."""
    new = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, (dict, list, set)):
            new.__dict__[name] = value.copy()
    new._parameters = {
        k: None if p is None else nn.Parameter(_converted(p.detach(), dtype), p.requires_grad)
        for k, p in module._parameters.items()
    }
    new._buffers = {
        k: None if b is None else _converted(b, dtype) for k, b in module._buffers.items()
    }
    new._modules = {
        k: None if m is None else converted_copy(m, dtype) for k, m in module._modules.items()
    }
    return new


def _converted(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """A copy of ``tensor``, in ``dtype`` if it holds floating-point values (as ``.to``)."""
    return tensor.to(dtype if tensor.is_floating_point() else tensor.dtype, copy=True)
