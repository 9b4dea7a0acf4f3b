"""Row-band execution of the main transforms and chunked window attention: bit-identical to
running each layer on the whole map (small maps, bands far smaller than in practice)."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import randomize_lae, tiny_tcm, tiny_vbr
from lae_vbr.models import layers
from lae_vbr.models.banded import band_geometry, run_layers_in_bands


@pytest.fixture(scope="module")
def tcm():
    torch.manual_seed(0)
    return tiny_tcm().eval()


def test_main_transform_layers_have_a_geometry(tcm) -> None:
    """All but the strided blocks after the first (run whole, see band_geometry)."""
    whole = [i for i, layer in enumerate(tcm.g_a) if band_geometry(layer) is None]
    assert whole == [3, 6]
    for layer in tcm.g_s:
        assert band_geometry(layer) is not None, type(layer).__name__


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("max_pixels", [1, 40_000])
def test_banded_transforms_equal_whole(tcm, max_pixels: int, channels_last: bool) -> None:
    """The smallest bands (max_pixels=1: MIN_BAND_PIXELS) put most rows near a band edge;
    NHWC weights (`transforms_to_channels_last`) keep NHWC maps through the bands."""
    if channels_last:
        tcm = copy.deepcopy(tcm).transforms_to_channels_last()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 256, 1024)
    with torch.inference_mode():
        y = run_layers_in_bands(tcm.g_a, x, max_pixels)
        assert torch.equal(y, tcm.g_a(x))
        y_hat = torch.randn(1, tcm.M, 16, 64)
        x_hat = run_layers_in_bands(tcm.g_s, y_hat, max_pixels)
        assert torch.equal(x_hat, tcm.g_s(y_hat))
    assert x_hat.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_chunked_window_attention_equals_whole(monkeypatch) -> None:
    torch.manual_seed(2)
    for kind in ("W", "SW"):
        attention = layers.WindowAttention(16, 8, 4, kind).eval()
        x = torch.randn(1, 24, 32, 16)
        with torch.inference_mode():
            whole = attention(x)
            monkeypatch.setattr(layers, "ATTENTION_CHUNK_ELEMENTS", 2 * 4**4 * 3)  # 3 windows
            assert torch.equal(attention(x), whole)
            monkeypatch.undo()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_compress_decompress_unchanged_by_bands(monkeypatch, channels_last: bool) -> None:
    """The codec's own path (analysis / synthesis) with tiny bands codes the same bytes and
    decodes the same image."""
    torch.manual_seed(3)
    model = tiny_vbr().eval()
    randomize_lae(model.modnet_ga)
    randomize_lae(model.modnet_gs, seed=1)
    model.update()
    if channels_last:
        model.transforms_to_channels_last()
    x = torch.rand(1, 3, 250, 1000)
    with torch.inference_mode():
        whole = model.compress(x, 2.0)
        x_whole = model.decompress(whole["strings"], whole["shape"], 2.0)["x_hat"]
        monkeypatch.setattr("lae_vbr.models.banded.BAND_PIXELS", 1)
        banded = model.compress(x, 2.0)
        x_banded = model.decompress(banded["strings"], banded["shape"], 2.0)["x_hat"]
    assert banded["strings"] == whole["strings"]
    assert torch.equal(x_banded, x_whole)


def test_callers_map_is_never_overwritten(tcm) -> None:
    """A ConvTransBlock overwrites maps made inside the banded run only, not the input given."""
    torch.manual_seed(4)
    block = torch.nn.Sequential(tcm.g_a[2], tcm.g_a[1])  # SW then W: the second in place
    x = torch.randn(1, 32, 128, 512)
    given = x.clone()
    with torch.inference_mode():
        out = run_layers_in_bands(block, x, 1)
        assert torch.equal(x, given)
        assert torch.equal(out, block(x))
