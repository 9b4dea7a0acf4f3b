"""The channel-wise autoregressive Gaussian entropy model of TCM, written once.

For each of the S channel slices the model predicts a mean and a scale from the hyperprior and
the slices decoded so far, quantises the slice, and adds a latent residual prediction (LRP).
Training, compression and decompression differ only in *how a slice is quantised*; that step
is a small strategy object passed to :func:`run_slices`:

* :class:`LikelihoodStep`  (training / forward): straight-through rounding + Gaussian likelihoods.
* :class:`EncodeStep`      (compress): symbols and CDF indexes collected for the rANS coder.
* :class:`DecodeStep`      (decompress): symbols read back from the rANS streams.

With ``recompute``, the slice networks keep only their inputs for the backward pass
(:func:`run_networks`): latent refinement of large images, where keeping the networks' autograd
intermediates (the window attention of 2 × S SWAtten blocks) is what dominates the memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .compressai_compat import bottleneck_likelihood_of, gaussian_likelihood_of
from .layers import SWAtten
from .rans import CdfTables, CheckedRansDecoder, check_codable, symbols_crc

__all__ = [
    "ste_round",
    "build_slice_transforms",
    "SliceCodec",
    "LikelihoodStep",
    "EncodeStep",
    "DecodeStep",
    "run_slices",
    "run_networks",
    "bottleneck_likelihood",
    "gaussian_likelihood",
]


def ste_round(x: Tensor) -> Tensor:
    """Round with a straight-through (identity) gradient."""
    return torch.round(x) - x.detach() + x


def _transform(in_ch: int, out_ch: int, hidden: Sequence[int]) -> nn.Sequential:
    """The 3-conv transform (→224→128→out with GELU, by default) for means, scales and LRP."""
    h1, h2 = hidden
    return nn.Sequential(
        nn.Conv2d(in_ch, h1, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(h1, h2, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(h2, out_ch, 3, padding=1),
    )


def build_slice_transforms(
    latent_channels: int,
    num_slices: int,
    max_support_slices: int,
    atten_dim: int,
    atten_head_dim: int,
    window_size: int,
    hidden: Sequence[int],
) -> dict[str, nn.ModuleList]:
    """The slice networks, keyed by the reference's attribute names.

    The codec registers each ModuleList directly on itself, so checkpoint keys stay
    ``atten_mean.0…``, ``cc_mean_transforms.0…``, etc.
    """
    if latent_channels % num_slices:
        raise ValueError(
            f"latent channels M={latent_channels} must be divisible by num_slices={num_slices}"
        )
    c = latent_channels // num_slices

    def support(i: int) -> int:
        used = i if max_support_slices < 0 else min(i, max_support_slices)
        return latent_channels + c * used

    def atten(i: int) -> nn.Sequential:
        dim = support(i)
        return nn.Sequential(SWAtten(dim, dim, atten_head_dim, window_size, 0.0, atten_dim))

    slices = range(num_slices)
    return {
        "atten_mean": nn.ModuleList(atten(i) for i in slices),
        "atten_scale": nn.ModuleList(atten(i) for i in slices),
        "cc_mean_transforms": nn.ModuleList(_transform(support(i), c, hidden) for i in slices),
        "cc_scale_transforms": nn.ModuleList(_transform(support(i), c, hidden) for i in slices),
        "lrp_transforms": nn.ModuleList(_transform(support(i) + c, c, hidden) for i in slices),
    }


class SliceCodec(Protocol):
    """What :func:`run_slices` needs from a codec: the slice networks and the support depth."""

    max_support_slices: int
    atten_mean: nn.ModuleList
    atten_scale: nn.ModuleList
    cc_mean_transforms: nn.ModuleList
    cc_scale_transforms: nn.ModuleList
    lrp_transforms: nn.ModuleList


class SliceStep(Protocol):
    """How slice ``i`` is quantised, given its predicted mean and scale."""

    def __call__(self, i: int, mu: Tensor, scale: Tensor) -> Tensor: ...


def gaussian_likelihood(
    gaussian: GaussianConditional, y_hat: Tensor, scale: Tensor, mu: Tensor
) -> Tensor:
    """Likelihood of values already quantised, with the gradient reaching ``y_hat``."""
    likelihood = gaussian_likelihood_of(gaussian, y_hat, scale, mu)
    if gaussian.use_likelihood_bound:
        likelihood = gaussian.likelihood_lower_bound(likelihood)
    return likelihood


def bottleneck_likelihood(bottleneck: EntropyBottleneck, z_hat: Tensor) -> Tensor:
    """Likelihood of an already quantised hyper-latent, with the gradient reaching ``z_hat``
    (CompressAI's EntropyBottleneck.forward without its own quantisation)."""
    values = z_hat.transpose(0, 1).contiguous()
    likelihood = bottleneck_likelihood_of(bottleneck, values.reshape(values.shape[0], 1, -1))
    if bottleneck.use_likelihood_bound:
        likelihood = bottleneck.likelihood_lower_bound(likelihood)
    return likelihood.reshape(values.shape).transpose(0, 1).contiguous()


class LikelihoodStep:
    """Training/forward quantisation: y_hat = round(y − μ) + μ (straight-through) and
    Gaussian likelihoods of y: noisy in training mode and rounded in eval mode, as in
    CompressAI, or, with ``straight_through``, of the rounded values with an identity gradient
    (latent refinement optimises the rate of the values actually coded)."""

    def __init__(
        self,
        y: Tensor,
        num_slices: int,
        gaussian: GaussianConditional,
        straight_through: bool = False,
    ) -> None:
        self.slices = y.chunk(num_slices, 1)
        self.gaussian = gaussian
        self.straight_through = straight_through
        self.likelihoods: list[Tensor] = []

    def __call__(self, i: int, mu: Tensor, scale: Tensor) -> Tensor:
        y_slice = self.slices[i]
        y_hat = ste_round(y_slice - mu) + mu
        if self.straight_through:
            lik = gaussian_likelihood(self.gaussian, y_hat, scale, mu)
        else:
            _, lik = self.gaussian(y_slice, scale, mu)
        self.likelihoods.append(lik)
        return y_hat

    def likelihood(self) -> Tensor:
        return torch.cat(self.likelihoods, dim=1)


class EncodeStep:
    """Compression: quantise to integer symbols and queue them with their CDF indexes.

    All slices of one image go into a single rANS stream (one per batch element).
    """

    def __init__(self, y: Tensor, num_slices: int, gaussian: GaussianConditional) -> None:
        self.slices = y.chunk(num_slices, 1)
        self.gaussian = gaussian
        self.symbols: list[list[Tensor]] = [[] for _ in range(y.shape[0])]
        self.indexes: list[list[Tensor]] = [[] for _ in range(y.shape[0])]

    def __call__(self, i: int, mu: Tensor, scale: Tensor) -> Tensor:
        index = self.gaussian.build_indexes(scale)
        symbols = self.gaussian.quantize(self.slices[i], "symbols", mu)
        for b in range(symbols.shape[0]):
            self.symbols[b].append(symbols[b].reshape(-1))
            self.indexes[b].append(index[b].reshape(-1))
        return symbols.to(mu.dtype) + mu

    def flush(self) -> list[bytes]:
        g = self.gaussian
        cdf = g.quantized_cdf.tolist()
        cdf_lengths = g.cdf_length.reshape(-1).int().tolist()
        offsets = g.offset.reshape(-1).int().tolist()
        strings = []
        for symbols, indexes in zip(self.symbols, self.indexes, strict=True):
            check_codable(g, torch.cat(symbols), torch.cat(indexes))
            encoder = BufferedRansEncoder()
            encoder.encode_with_indexes(
                torch.cat(symbols).int().tolist(),
                torch.cat(indexes).int().tolist(),
                cdf,
                cdf_lengths,
                offsets,
            )
            strings.append(encoder.flush())
        return strings

    def crc(self, b: int, start: int = 0) -> int:
        """CRC-32 of image ``b``'s symbols (see :func:`symbols_crc`)."""
        return symbols_crc(self.symbols[b], start)


class DecodeStep:
    """Decompression: read each slice's symbols back from the per-image rANS streams, with
    the bounds-checked decoder (:mod:`lae_vbr.models.rans`)."""

    def __init__(self, strings: Sequence[bytes], gaussian: GaussianConditional) -> None:
        self.gaussian = gaussian
        tables = CdfTables.of(gaussian)
        self.decoders = [CheckedRansDecoder(s, tables) for s in strings]
        self.symbols: list[list[np.ndarray]] = [[] for _ in strings]

    def __call__(self, i: int, mu: Tensor, scale: Tensor) -> Tensor:
        index = self.gaussian.build_indexes(scale)
        rows = []
        for b, decoder in enumerate(self.decoders):
            values = decoder.decode(index[b])
            self.symbols[b].append(values)
            rows.append(torch.from_numpy(values).to(mu.dtype).reshape(mu.shape[1:]))
        symbols = torch.stack(rows).to(mu.device)
        return self.gaussian.dequantize(symbols, mu)

    def finish(self) -> None:
        """StreamError unless every stream was read to its end (a damaged stream usually
        is not)."""
        for decoder in self.decoders:
            decoder.finish()

    def crc(self, b: int, start: int = 0) -> int:
        """CRC-32 of image ``b``'s decoded symbols (see :func:`symbols_crc`)."""
        return symbols_crc(self.symbols[b], start)


def run_networks(inputs: Sequence[Tensor], *networks: nn.Module, recompute: bool = False) -> Tensor:
    """The ``networks`` applied in turn to the channel concatenation of ``inputs``.

    With ``recompute`` (and autograd on), their autograd intermediates, the concatenation
    included, are not kept: the backward pass recomputes them from ``inputs`` when it reaches
    them (``torch.utils.checkpoint``, non-reentrant), so only the inputs, which the slice loop
    holds anyway, stay alive until then, and one call's intermediates at a time after. The
    networks must be deterministic (eval mode); the gradients are those of keeping them.

    On TCM-VBR N=64's latent codec at a 2048×2048 image's latent (128×128), straight-through
    forward and backward peaked at 6.98 GB keeping every intermediate and at 2.82 GB with the
    slice loop's calls recomputed (model 0.95 GB, one thread;
    ``experiments/bench/bench_refine_grad.py latent-kept|latent-networks 2048``)."""

    def apply(*parts: Tensor) -> Tensor:
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        for network in networks:
            x = network(x)
        return x

    if recompute and torch.is_grad_enabled():
        return checkpoint(apply, *inputs, use_reentrant=False)
    return apply(*inputs)


def run_slices(
    codec: SliceCodec,
    latent_means: Tensor,
    latent_scales: Tensor,
    y_hw: tuple[int, int],
    step: SliceStep,
    recompute: bool = False,
) -> Tensor:
    """Decode the latent slice by slice and return y_hat (LRP included).

    ``step`` decides how each slice is quantised; everything else is shared by training,
    compression, decompression and latent refinement. ``recompute``: the slice networks'
    intermediates are recomputed in the backward pass instead of kept (:func:`run_networks`).
    """
    h, w = y_hw
    num_slices = len(codec.cc_mean_transforms)
    max_support = codec.max_support_slices
    y_hat_slices: list[Tensor] = []
    run = partial(run_networks, recompute=recompute)
    for i in range(num_slices):
        support = y_hat_slices if max_support < 0 else y_hat_slices[:max_support]
        mean_support = run([latent_means, *support], codec.atten_mean[i])
        mu = run([mean_support], codec.cc_mean_transforms[i])[:, :, :h, :w]
        # the scale side's attention feeds one transform only: the two recomputed together
        scale_networks = (codec.atten_scale[i], codec.cc_scale_transforms[i])
        scale = run([latent_scales, *support], *scale_networks)[:, :, :h, :w]
        y_hat_slice = step(i, mu, scale)
        lrp = run([mean_support, y_hat_slice], codec.lrp_transforms[i])
        y_hat_slices.append(y_hat_slice + 0.5 * torch.tanh(lrp))
    return torch.cat(y_hat_slices, dim=1)
