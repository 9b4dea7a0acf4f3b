"""CompressAI's hyperprior codecs as composed codecs: ``g_a → latent codec → g_s``.

:class:`CompressAIBackbone` builds a model of CompressAI's registry by name
(``bmshj2018-hyperprior``, ``mbt2018-mean``, ``mbt2018``, ``cheng2020-anchor``, ...) and takes
it apart: its ``g_a`` and ``g_s``, and :class:`CompressAIHyperprior`, the one adapter that runs
the model's hyperprior and Gaussian conditional (scale-only, mean-scale, or with CompressAI's
serial context model) as a latent codec. The result is a
:class:`~lae_vbr.models.composed.ComposedCodec` like TCM, so the LAEs, latent refinement and
the R-λ model work on it, any image size works (padding to 64), and the state-dict keys are
CompressAI's own, so CompressAI checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder
from compressai.models import (
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.registry import MODELS
from torch import Tensor, nn

from .composed import ComposedCodec
from .compressai_compat import bottleneck_medians
from .entropy import bottleneck_likelihood, gaussian_likelihood, run_networks, ste_round
from .rans import (
    CdfTables,
    CheckedRansDecoder,
    bottleneck_coded_bits,
    bottleneck_crcs,
    check_codable,
    coded_bits,
    symbols_crc,
    use_checked_decoding,
)

__all__ = ["CompressAIBackbone", "CompressAIHyperprior"]

#: CompressAI's context model: a 5×5 masked convolution, y is 4× z's size.
_CONTEXT_KERNEL = 5


class CompressAIHyperprior(nn.Module):
    """The latent codec of a CompressAI hyperprior model (its own modules and key names).

    Three families differ only in how the Gaussian parameters of y are formed: scales from
    ``h_s(z_hat)`` with ``h_a(|y|)`` (``ScaleHyperprior``), scales and means from ``h_s``
    (``MeanScaleHyperprior``), or ``entropy_parameters`` of ``h_s`` and a serial context
    model (``JointAutoregressiveHierarchicalPriors``; coded pixel by pixel, CPU only).
    """

    def __init__(self, model: ScaleHyperprior) -> None:
        super().__init__()
        if not isinstance(model, ScaleHyperprior):
            raise TypeError(
                f"{type(model).__name__} is not one of CompressAI's hyperprior models "
                "(bmshj2018-hyperprior, mbt2018-mean, mbt2018, cheng2020-anchor/attn)"
            )
        use_checked_decoding(model)
        self.mean_scale = isinstance(model, MeanScaleHyperprior)
        self.autoregressive = isinstance(model, JointAutoregressiveHierarchicalPriors)
        self.M = int(model.M) if hasattr(model, "M") else None
        self.entropy_bottleneck = model.entropy_bottleneck
        self.gaussian_conditional = model.gaussian_conditional
        self.h_a = model.h_a
        self.h_s = model.h_s
        if self.autoregressive:
            self.context_prediction = model.context_prediction
            self.entropy_parameters = model.entropy_parameters

    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self.h_a(y if self.mean_scale else torch.abs(y))

    def _gaussian(self, params: Tensor, y_hat: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(scales, means) of y from ``h_s(z_hat)`` (and the context of ``y_hat``)."""
        if self.autoregressive:
            ctx = self.context_prediction(y_hat)
            params = self.entropy_parameters(torch.cat((params, ctx), dim=1))
        if not self.mean_scale:
            return params, None
        scales, means = params.chunk(2, 1)
        return scales, means

    def _context_input(self, y: Tensor, straight_through: bool) -> Tensor:
        """What the context model sees: y rounded without means (CompressAI's forward)."""
        if straight_through:
            return ste_round(y)
        return self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")

    def forward(
        self,
        y: Tensor,
        z: Tensor | None = None,
        straight_through: bool = False,
        recompute: bool = False,
    ) -> dict:
        z = self.hyper_analysis(y) if z is None else z
        if straight_through:
            z_offset = bottleneck_medians(self.entropy_bottleneck)
            z_hat = ste_round(z - z_offset) + z_offset
            z_likelihoods = bottleneck_likelihood(self.entropy_bottleneck, z_hat)
        else:
            z_hat, z_likelihoods = self.entropy_bottleneck(z)
        context = self._context_input(y, straight_through) if self.autoregressive else None
        scales, means = self._gaussian(
            run_networks([z_hat], self.h_s, recompute=recompute), context
        )
        if straight_through:
            centre = 0 if means is None else means
            y_hat = ste_round(y - centre) + centre
            y_likelihoods = gaussian_likelihood(self.gaussian_conditional, y_hat, scales, means)
        else:
            y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        if self.autoregressive and not straight_through:
            y_hat = context
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}, "z": z}

    def compress(self, y: Tensor, z: Tensor | None = None) -> dict:
        z = self.hyper_analysis(y) if z is None else z
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        params = self.h_s(z_hat)
        if self.autoregressive:
            coded = [self._encode_serial(y[i : i + 1], params[i : i + 1]) for i in range(len(y))]
            y_strings, symbols = [c[0] for c in coded], [c[1] for c in coded]
        else:
            scales, means = self._gaussian(params)
            indexes = self.gaussian_conditional.build_indexes(scales)
            y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
            symbols = list(self.gaussian_conditional.quantize(y, "symbols", means))
        return {
            "strings": [y_strings, z_strings],
            "shape": tuple(z.shape[-2:]),
            "symbols_crc": self._crcs(z_hat, symbols),
        }

    def coded_bits(self, y: Tensor) -> dict[str, Tensor]:
        """Per image, the bits the coder spends on y and on z, without coding (see
        :func:`~lae_vbr.models.rans.coded_bits`). With the serial context model the means
        and scales are those of the parallel forward (context from ``round(y)``), which the
        serial coder's differ from slightly: an estimate, not the file's exact cost."""
        z_hat, z_bits = bottleneck_coded_bits(self.entropy_bottleneck, self.hyper_analysis(y))
        context = self._context_input(y, False) if self.autoregressive else None
        scales, means = self._gaussian(self.h_s(z_hat), context)
        gaussian = self.gaussian_conditional
        symbols = gaussian.quantize(y, "symbols", means)
        y_bits = coded_bits(gaussian, symbols, gaussian.build_indexes(scales))
        return {"y": y_bits.flatten(1).sum(1), "z": z_bits}

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> dict:
        y_strings, z_strings = strings
        z_hat = self.entropy_bottleneck.decompress(list(z_strings), tuple(shape))
        params = self.h_s(z_hat)
        if self.autoregressive:
            decoded = [self._decode_serial(s, params[i : i + 1]) for i, s in enumerate(y_strings)]
            y_hat = torch.cat([d[0] for d in decoded])
            symbols = [d[1] for d in decoded]
        else:
            scales, means = self._gaussian(params)
            indexes = self.gaussian_conditional.build_indexes(scales)
            gaussian = self.gaussian_conditional
            y_hat = gaussian.decompress(list(y_strings), indexes, z_hat.dtype, means)
            symbols = list(torch.round(y_hat if means is None else y_hat - means).int())
        return {"y_hat": y_hat, "symbols_crc": self._crcs(z_hat, symbols)}

    def _crcs(self, z_hat: Tensor, y_symbols: Sequence[Tensor | np.ndarray]) -> list[int]:
        z_crcs = bottleneck_crcs(self.entropy_bottleneck, z_hat)
        return [symbols_crc([s], c) for s, c in zip(y_symbols, z_crcs, strict=True)]

    # -- the serial context model (mbt2018, cheng2020): one pixel at a time, as CompressAI
    def _context_params(self, y_hat: Tensor, params: Tensor, r: int, c: int) -> tuple:
        """(scales, means) of pixel (r, c) from the decoded neighbourhood in padded ``y_hat``."""
        conv = self.context_prediction
        crop = y_hat[:, :, r : r + _CONTEXT_KERNEL, c : c + _CONTEXT_KERNEL]
        ctx = F.conv2d(crop, conv.weight * conv.mask, bias=conv.bias)
        p = torch.cat((params[:, :, r : r + 1, c : c + 1], ctx), dim=1)
        return self.entropy_parameters(p).squeeze(3).squeeze(2).chunk(2, 1)

    def _encode_serial(self, y: Tensor, params: Tensor) -> tuple[bytes, Tensor]:
        pad = (_CONTEXT_KERNEL - 1) // 2
        y_hat = F.pad(y, (pad, pad, pad, pad))
        gaussian, symbols, indexes = self.gaussian_conditional, [], []
        for r in range(y.shape[2]):
            for c in range(y.shape[3]):
                scales, means = self._context_params(y_hat, params, r, c)
                q = gaussian.quantize(y_hat[:, :, r + pad, c + pad], "symbols", means)
                y_hat[:, :, r + pad, c + pad] = q + means
                symbols.append(q.reshape(-1))
                indexes.append(gaussian.build_indexes(scales).reshape(-1))
        symbols_all, tables = torch.cat(symbols).int(), CdfTables.of(gaussian)
        check_codable(gaussian, symbols_all, torch.cat(indexes))
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(
            symbols_all.tolist(), torch.cat(indexes).int().tolist(), tables.cdfs.tolist(),
            tables.sizes.tolist(), tables.offsets.tolist(),
        )  # fmt: skip
        return encoder.flush(), symbols_all

    def _decode_serial(self, string: bytes, params: Tensor) -> tuple[Tensor, np.ndarray]:
        pad = (_CONTEXT_KERNEL - 1) // 2
        h, w = params.shape[2], params.shape[3]
        channels = self.entropy_parameters[-1].out_channels // 2
        y_hat = params.new_zeros((1, channels, h + 2 * pad, w + 2 * pad))
        decoder = CheckedRansDecoder(string, CdfTables.of(self.gaussian_conditional))
        symbols = []
        for r in range(h):
            for c in range(w):
                scales, means = self._context_params(y_hat, params, r, c)
                values = decoder.decode(self.gaussian_conditional.build_indexes(scales))
                symbols.append(values)
                q = torch.from_numpy(values).to(y_hat.dtype).reshape(means.shape)
                y_hat[:, :, r + pad, c + pad] = q + means
        decoder.finish()
        return F.pad(y_hat, (-pad, -pad, -pad, -pad)), np.concatenate(symbols)


class CompressAIBackbone(ComposedCodec):
    """A CompressAI hyperprior codec (two strings per image: y and z) of any image size.

    Args:
        architecture: a name of ``compressai.registry.MODELS``, e.g. ``"mbt2018-mean"``.
        **kwargs: the model's constructor arguments (``N``, ``M``, ...).
    """

    #: g_a downsamples by 16 and h_a by 4: z needs sides that are multiples of 64 pixels.
    pad_multiple = 64

    def __init__(self, architecture: str, **kwargs: Any) -> None:
        if architecture not in MODELS:
            known = ", ".join(sorted(MODELS))
            raise ValueError(f"unknown CompressAI model {architecture!r} (known: {known})")
        model = MODELS[architecture](**kwargs)
        try:
            latent_codec = CompressAIHyperprior(model)
        except TypeError as err:
            raise TypeError(
                f"{architecture} cannot be used as a backbone: {err}; only hyperprior models "
                "(a y and a z string per image) can"
            ) from None
        super().__init__(
            model.g_a,
            latent_codec,
            model.g_s,
            latent_channels=int(model.M),
            pad_multiple=self.pad_multiple,
        )
        self.architecture = architecture
        self.kwargs = dict(kwargs)
        self.M = int(model.M)
