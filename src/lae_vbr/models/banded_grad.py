"""The gradient of a frozen synthesis transform in row bands: latent refinement on large images.

Latent refinement back-propagates an image loss through ``g_s`` to the latent. Autograd keeps
every layer's intermediates at full size for that: on a 3840×2160 photo, TCM-VBR N=64 needs
several times a plain compress's memory. With the weights frozen, the gradient with respect to
``g_s``'s (latent-sized) input can instead be computed band by band through the whole chain of
layers: for each band of output rows, the input rows it depends on (each layer's halo and
alignment, :mod:`.banded`) are run forward with autograd and the band's output gradient is
back-propagated; the input gradients of the bands add up. Each output row belongs to one band
and is computed from exactly the inputs it depends on, so the sum is the gradient (up to the
order of float additions). The forward pass runs banded without autograd, as coding does, and
only ``g_s``'s input is kept for the backward pass.

:func:`synthesise` picks this path when it pays off and is exact: ``g_s`` is an
``nn.Sequential`` whose every layer has a band geometry, no weight of it asks for a gradient,
the map is on the CPU and larger than :data:`MIN_PIXELS`; otherwise it calls ``g_s`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .banded import BAND_PIXELS, BandGeometry, band_geometry, run_layers_in_bands

__all__ = ["MIN_PIXELS", "chain_rows", "gradient_in_bands", "synthesise"]

#: Output pixels from which the banded gradient is used: below it autograd's memory is small,
#: and the whole-map gradient (bit for bit what earlier versions computed) is kept.
MIN_PIXELS = 4_000_000


def chain_rows(
    geometries: Sequence[BandGeometry], heights: Sequence[int], start: int, stop: int
) -> list[tuple[int, int]]:
    """The rows each layer of a chain reads to produce output rows ``[start, stop)`` of the
    last one exactly: ``[(lo, hi)]`` per layer, first layer first (``heights``: the input
    height of each layer and the output height of the last)."""
    reads = []
    for k in range(len(geometries) - 1, -1, -1):
        g, height = geometries[k], heights[k]
        first = start * g.down // g.up  # the input rows kept: aligned, around the output rows
        first -= first % g.align
        last = -(-stop * g.down // g.up)
        last = min(height, -(-last // g.align) * g.align)
        lo, hi = max(0, first - g.halo), min(height, last + g.halo)
        reads.append((lo, hi))
        start, stop = lo, hi
    return reads[::-1]


def _band_output(
    layers: Sequence[nn.Module],
    geometries: Sequence[BandGeometry],
    band: Tensor,
    reads: Sequence[tuple[int, int]],
    out_rows: tuple[int, int],
) -> Tensor:
    """The chain's output rows ``out_rows`` from the rows ``reads[0]`` of its input (``band``),
    each layer keeping the rows the next one reads (``reads``, in map rows)."""
    for k, (layer, g) in enumerate(zip(layers, geometries, strict=True)):
        top = reads[k][0] * g.up // g.down  # the map row of the band's first output row
        want = reads[k + 1] if k + 1 < len(layers) else out_rows
        band = layer(band)[..., want[0] - top : want[1] - top, :]
    return band


def _bands(height: int, width: int, max_pixels: int) -> list[tuple[int, int]]:
    rows = max(1, max_pixels // max(width, 1))
    count = math.ceil(height / rows)
    rows = math.ceil(height / count)
    return [(s, min(height, s + rows)) for s in range(0, height, rows)]


class _BandedSynthesis(torch.autograd.Function):
    """``g_s(y)`` whose backward pass recomputes the chain band by band (see the module)."""

    @staticmethod
    def forward(ctx, y: Tensor, transform: nn.Sequential, max_pixels: int) -> Tensor:
        ctx.transform, ctx.max_pixels = transform, max_pixels
        ctx.autocast = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        ctx.save_for_backward(y)
        return run_layers_in_bands(transform, y)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (y,) = ctx.saved_tensors
        layers = list(ctx.transform)
        geometries = [band_geometry(layer) for layer in layers]
        heights = [y.shape[-2]]
        for g in geometries:
            heights.append(heights[-1] * g.up // g.down)
        grad_in = torch.zeros_like(y)
        enabled, dtype = ctx.autocast
        for start, stop in _bands(heights[-1], grad_out.shape[-1], ctx.max_pixels):
            reads = chain_rows(geometries, heights, start, stop)
            lo, hi = reads[0]
            part = y[..., lo:hi, :].detach().requires_grad_(True)
            with torch.enable_grad(), torch.autocast("cpu", dtype=dtype, enabled=enabled):
                out = _band_output(layers, geometries, part, reads, (start, stop))
            (grad,) = torch.autograd.grad(out, part, grad_out[..., start:stop, :].to(out.dtype))
            grad_in[..., lo:hi, :] += grad.to(grad_in.dtype)
        return grad_in, None, None


def synthesise(transform: nn.Module, y: Tensor, max_pixels: int | None = None) -> Tensor:
    """``transform(y)``: in row bands without autograd (:func:`~.banded.run_layers_in_bands`),
    with a gradient computed in row bands where that applies (see the module), else whole."""
    if not gradient_in_bands(transform, y):
        return run_layers_in_bands(transform, y)
    return _BandedSynthesis.apply(y, transform, max_pixels or BAND_PIXELS // 4)


def gradient_in_bands(transform: nn.Module, y: Tensor) -> bool:
    """Whether :func:`synthesise` computes ``transform``'s gradient at ``y`` in row bands."""
    if not (torch.is_grad_enabled() and y.requires_grad and y.device.type == "cpu"):
        return False
    if not isinstance(transform, nn.Sequential):
        return False
    if any(p.requires_grad for p in transform.parameters()):
        return False
    geometries = [band_geometry(layer) for layer in transform]
    if any(g is None for g in geometries):
        return False
    scale = math.prod(g.up / g.down for g in geometries)  # type: ignore[union-attr]
    return y.shape[-2] * y.shape[-1] * scale * scale >= MIN_PIXELS
