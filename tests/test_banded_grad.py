"""The gradient of a frozen ``g_s`` computed in row bands (latent refinement on large images)
equals autograd's on the whole map, and the forward pass is unchanged."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_tcm
from lae_vbr.models import banded_grad
from lae_vbr.models.banded import band_geometry, band_rows
from lae_vbr.models.banded_grad import layer_gradient, synthesise


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


def test_each_layers_gradient_in_bands_equals_the_whole_layers(g_s) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 64, 32, 48, generator=gen)
    banded_layers = 0
    for layer in g_s:
        whole = x.clone().requires_grad_(True)
        out = layer(whole)
        grad_out = torch.randn(out.shape, generator=gen)
        (expected,) = torch.autograd.grad(out, whole, grad_out)
        got = layer_gradient(layer, x, grad_out, max_pixels=200)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())
        geometry = band_geometry(layer)
        rows = band_rows(geometry, x.shape[-2], x.shape[-1], 200)
        banded_layers += rows + 2 * geometry.halo < x.shape[-2]
        x = out.detach()
    assert banded_layers >= 3  # the larger maps were cut into bands


@pytest.mark.parametrize("max_pixels", [200, 700])
def test_gradient_written_over_the_input_is_the_same_bit_for_bit(g_s, max_pixels) -> None:
    """The backward pass writes a layer's gradient over its recomputed input (one full map
    less): the same values as accumulating into a new map, band halos included."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 64, 32, 48, generator=gen)
    banded_layers = 0
    for layer in g_s:
        out = layer(x)
        grad_out = torch.randn(out.shape, generator=gen)
        expected = layer_gradient(layer, x, grad_out, max_pixels)
        mine = x.clone()
        got = layer_gradient(layer, mine, grad_out, max_pixels, overwrite=True)
        assert torch.equal(got, expected)
        geometry = band_geometry(layer)
        height, width = x.shape[-2:]
        if band_rows(geometry, height, width, max_pixels) + 2 * geometry.halo < height:
            assert got.data_ptr() == mine.data_ptr()  # banded: written over the input
            banded_layers += 1
        x = out
    assert banded_layers >= 3


def test_small_images_and_trainable_weights_take_the_whole_map(g_s) -> None:
    y = torch.randn(1, 64, 8, 12, requires_grad=True)
    assert not banded_grad.gradient_in_bands(g_s, y)  # below MIN_PIXELS
    trainable = tiny_tcm().g_s
    large = torch.randn(1, 64, 800, 800, requires_grad=True)
    assert not banded_grad.gradient_in_bands(trainable, large)
