"""The gradient of a frozen ``g_s`` computed in row bands (latent refinement on large images)
equals autograd's on the whole map, and the forward pass is unchanged."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_tcm
from lae_vbr.models import banded_grad
from lae_vbr.models.banded import band_geometry
from lae_vbr.models.banded_grad import chain_rows, synthesise


@pytest.fixture(scope="module")
def g_s() -> torch.nn.Sequential:
    torch.manual_seed(0)
    transform = tiny_tcm().eval().g_s
    transform.requires_grad_(False)
    return transform


@pytest.mark.parametrize("max_pixels", [3000, 9000])
def test_banded_gradient_equals_the_whole_maps(g_s, monkeypatch, max_pixels) -> None:
    monkeypatch.setattr(banded_grad, "MIN_PIXELS", 0)
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(1, 64, 8, 12, generator=gen)
    weights = torch.randn(1, 3, 128, 192, generator=gen)
    banded = y.clone().requires_grad_(True)
    out = synthesise(g_s, banded, max_pixels)
    (grad,) = torch.autograd.grad((out * weights).sum(), banded)
    whole = y.clone().requires_grad_(True)
    reference = g_s(whole)
    (expected,) = torch.autograd.grad((reference * weights).sum(), whole)
    assert torch.allclose(out, reference, atol=1e-6)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


def test_the_rows_each_layer_reads_cover_its_bands_context(g_s) -> None:
    geometries = [band_geometry(layer) for layer in g_s]
    heights = [8]
    for g in geometries:
        heights.append(heights[-1] * g.up // g.down)
    reads = chain_rows(geometries, heights, 64, 80)  # output rows 64..80 of 128
    assert reads[0][0] < 64 * 8 // 128 and reads[0][1] > 80 * 8 // 128  # context both sides
    assert all(0 <= lo < hi <= h for (lo, hi), h in zip(reads, heights, strict=False))


def test_small_images_and_trainable_weights_take_the_whole_map(g_s) -> None:
    y = torch.randn(1, 64, 8, 12, requires_grad=True)
    assert not banded_grad.gradient_in_bands(g_s, y)  # below MIN_PIXELS
    trainable = tiny_tcm().g_s
    large = torch.randn(1, 64, 800, 800, requires_grad=True)
    assert not banded_grad.gradient_in_bands(trainable, large)
