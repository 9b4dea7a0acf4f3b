"""Running the main transforms layer by layer in row bands, to bound inference memory.

A layer of ``g_a`` / ``g_s`` on a 4K image holds gigabytes of intermediates (a 128-channel
half-resolution map is 1 GB; a ConvTransBlock makes several). At inference each layer can
instead run on horizontal bands of its input, each widened by a *halo* of context rows, with
only the band's own rows of the result kept. Every layer here is local: a row of its output
depends on a bounded number of input rows, so with a halo at least that large the kept rows
are computed from exactly the same values, in the same order, as on the whole map. The
kernels involved (oneDNN convolutions, GEMMs, softmax, LayerNorm) compute each output element
the same way whatever the number of rows, so the result is bit-identical, which
``tests/test_banded.py`` checks with bands far smaller than those used in practice.

Only the layers' inputs and outputs are ever whole; peak memory is about two full maps plus
one band's intermediates, instead of all of a layer's intermediates at full size.

Geometry per layer kind (rows of the layer's input; "halo" is context on each side):

* ``ConvTransBlock``: halo and alignment one window. Band edges on the window grid keep the
  regular windows of the band those of the whole map; the shifted windows of the rows kept
  (offset by half a window) lie inside the band, away from the band's own wrap-around window.
  The halo also covers the two 3×3 convolutions of the CNN half (2 rows).
* ``ResidualBlockWithStride`` (stride 2): halo 4 (two output rows: a 3×3 stride-2 conv then a
  3×3 conv), alignment 2.
* ``ResidualBlockUpsample`` (×2): halo 2 (3 output rows: a sub-pixel 3×3 conv then a 3×3 conv).
* ``Conv2d`` (odd k, padding k // 2, stride s): halo s·⌈(k // 2) / s⌉, alignment s.
* sub-pixel convolution (3×3 conv then PixelShuffle(r)): halo 1, ×r.

Band edges fall on multiples of the alignment, and the band's first and last rows are the
map's own where the band touches the top or bottom, so the zero padding of the convolutions
and the wrap-around of the shifted windows there are those of the whole map.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from compressai.layers import ResidualBlockUpsample, ResidualBlockWithStride
from torch import Tensor, nn

from .layers import ConvTransBlock

__all__ = [
    "BAND_PIXELS",
    "BandGeometry",
    "band_geometry",
    "band_rows",
    "band_spans",
    "bands_overwritten",
    "run_in_bands",
    "run_layers_in_bands",
]

#: Pixels (of the larger of a layer's input and output) per band: about 0.26 MP, so a band of
#: stage 0 on a 4K image is 136 of its 1088 rows and its intermediates stay near 1 GB.
BAND_PIXELS = 1 << 18

#: Fewest input pixels per band. PyTorch computes a 3×3 convolution of a single image with its
#: own kernel instead of oneDNN's when the input has at most 20 480 elements, and the two round
#: differently; bands of at least 8 192 pixels (≥ 3 channels) stay on the whole map's kernel.
MIN_BAND_PIXELS = 8192


@dataclass(frozen=True)
class BandGeometry:
    """How a layer maps input rows to output rows, and the context a band of it needs.

    Attributes:
        up: output rows per input row (upsampling factor).
        down: input rows per output row (stride).
        halo: input rows of context needed on each side of a band (a multiple of ``align``).
        align: band edges (in input rows) must be multiples of this.
    """

    up: int = 1
    down: int = 1
    halo: int = 0
    align: int = 1


def band_geometry(layer: nn.Module) -> BandGeometry | None:
    """The geometry of a layer of the main transforms, or None for one not known to be local
    (run on the whole map)."""
    if isinstance(layer, ConvTransBlock):
        if layer.window_size < 2:
            return None  # the halo must also cover the CNN half's 2 rows
        return BandGeometry(halo=layer.window_size, align=layer.window_size)
    if isinstance(layer, ResidualBlockWithStride) and layer.conv1.in_channels <= 3:
        # Only the first (RGB in): on TCM-VBR N=64 at 1536×1024 a band of the 128-channel
        # stride-2 block rounded differently from the whole map (a shape-dependent oneDNN
        # kernel), so the later ones run whole (their output is a quarter of their input).
        stride = layer.conv1.stride[0]
        return BandGeometry(down=stride, halo=2 * stride, align=stride)
    if isinstance(layer, ResidualBlockUpsample):
        factor = layer.subpel_conv[1].upscale_factor
        return BandGeometry(up=factor, halo=2)
    if isinstance(layer, nn.Conv2d):
        return _conv_geometry(layer)
    if (
        isinstance(layer, nn.Sequential)
        and len(layer) == 2
        and isinstance(layer[0], nn.Conv2d)
        and isinstance(layer[1], nn.PixelShuffle)
    ):
        conv = _conv_geometry(layer[0])
        if conv is None or conv.down != 1:
            return None
        return BandGeometry(up=layer[1].upscale_factor, halo=conv.halo)
    return None


def _conv_geometry(conv: nn.Conv2d) -> BandGeometry | None:
    """A square, undilated convolution with 'same'-style zero padding (k // 2), else None."""
    (k, k_w), (s, s_w) = conv.kernel_size, conv.stride
    square = k == k_w and s == s_w and conv.dilation == (1, 1)
    if not square or k % 2 == 0 or conv.padding != (k // 2, k // 2):
        return None
    if conv.padding_mode != "zeros":
        return None
    return BandGeometry(down=s, halo=s * math.ceil((k // 2) / s), align=s)


def band_rows(geometry: BandGeometry, height: int, width: int, max_pixels: int) -> int:
    """Input rows per band for an input ``height`` × ``width``: a multiple of the alignment,
    within ``max_pixels`` (at the larger of input and output) and not below
    :data:`MIN_BAND_PIXELS`, with the rows spread evenly so the last band is not a sliver."""
    ratio = geometry.up / geometry.down
    pixels_per_row = width * max(1.0, ratio * ratio)
    rows = max(int(max_pixels // pixels_per_row), math.ceil(MIN_BAND_PIXELS / width), 1)
    bands = math.ceil(height / rows)
    return math.ceil(height / bands / geometry.align) * geometry.align


def run_in_bands(
    layer: nn.Module, x: Tensor, max_pixels: int | None = None, in_place: bool = False
) -> Tensor:
    """``layer(x)`` for a (B, C, H, W) map, computed in row bands when it has a known geometry
    and is larger than ``max_pixels`` (default :data:`BAND_PIXELS`); bit-identical to
    ``layer(x)`` (see the module notes). ``in_place``: ``x`` belongs to the caller alone, and
    a same-shape layer (a ConvTransBlock) may write its result over it."""
    max_pixels = BAND_PIXELS if max_pixels is None else max_pixels
    geometry = band_geometry(layer)
    height = x.shape[-2]
    if geometry is None or height % geometry.align:
        return layer(x)
    rows = band_rows(geometry, height, x.shape[-1], max_pixels)
    if rows + 2 * geometry.halo >= height:
        return layer(x)
    if in_place and geometry.up == geometry.down == 1 and layer_keeps_shape(layer):
        return _overwrite_in_bands(layer, x, rows, geometry.halo)
    up, down = geometry.up, geometry.down
    out: Tensor | None = None
    for start, stop, lo, hi in band_spans(height, rows, geometry.halo):
        band = layer(x[..., lo:hi, :])
        if out is None:
            shape = (*band.shape[:-2], height * up // down, band.shape[-1])
            out = torch.empty(
                shape,
                dtype=band.dtype,
                device=band.device,
                memory_format=_memory_format(band),
            )
        keep = slice((start - lo) * up // down, (stop - lo) * up // down)
        out[..., start * up // down : stop * up // down, :] = band[..., keep, :]
        del band
    assert out is not None
    return out


def _memory_format(x: Tensor) -> torch.memory_format:
    """The layout of a 4-D map (NHWC maps stay NHWC: a copy to NCHW would cost a reorder)."""
    nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc and not x.is_contiguous() else torch.contiguous_format


def layer_keeps_shape(layer: nn.Module) -> bool:
    """Whether a layer's output has its input's shape (so it can overwrite it)."""
    return isinstance(layer, ConvTransBlock)


def band_spans(height: int, rows: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """``(start, stop, lo, hi)``: the rows kept and the rows read (with the halo) per band."""
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        yield start, stop, max(0, start - halo), min(height, stop + halo)


def _overwrite_in_bands(layer: nn.Module, x: Tensor, rows: int, halo: int) -> Tensor:
    """Bands from the top down, each result written over its rows of ``x``: one full map
    instead of two (:func:`bands_overwritten`)."""
    for start, stop, lo, _, band_in in bands_overwritten(x, rows, halo):
        band = layer(band_in)
        del band_in
        x[..., start:stop, :] = band[..., start - lo : stop - lo, :]
        del band
    return x


def bands_overwritten(
    x: Tensor, rows: int, halo: int
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """``(start, stop, lo, hi, band_in)`` from the top down, for a caller that writes over each
    band's own rows of ``x`` once it has used ``band_in``: the input rows ``lo`` to ``hi``,
    including the ``halo`` rows above the band that the band before has overwritten (their
    input values are kept aside before the caller gets the band)."""
    height = x.shape[-2]
    above: Tensor | None = None  # input rows [start - halo, start)
    for start, stop, lo, hi in band_spans(height, rows, halo):
        band_in = x[..., lo:hi, :] if above is None else torch.cat((above, x[..., start:hi, :]), -2)
        above = x[..., stop - halo : stop, :].clone() if stop < height else None
        yield start, stop, lo, hi, band_in
        del band_in  # the caller's release frees it


def run_layers_in_bands(transform: nn.Module, x: Tensor, max_pixels: int | None = None) -> Tensor:
    """Apply a transform (an ``nn.Sequential``: each layer in bands; anything else: whole).

    Bands only where no gradient is recorded (under autograd every band's intermediates are
    kept for the backward pass anyway, so banding would save nothing) and on the CPU, whose
    kernels are checked to compute a band's rows as the whole map's (GPU libraries choose
    algorithms by shape, so a band could round differently there). Maps made here (every
    layer's input but the first) are overwritten in place where a layer allows it; never the
    caller's ``x`` nor a view of it.
    """
    cpu = x.device.type == "cpu"
    if torch.is_grad_enabled() or not cpu or not isinstance(transform, nn.Sequential):
        return transform(x)
    given = x.untyped_storage().data_ptr()
    for layer in transform:
        owned = x.untyped_storage().data_ptr() != given
        x = run_in_bands(layer, x, max_pixels, in_place=owned)
    return x
