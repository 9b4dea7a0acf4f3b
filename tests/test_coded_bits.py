"""What a file costs before it is coded: the rANS coder's own price of each symbol
(``coded_bits``), the stream length it gives (``stream_bytes``), and the faster table-index
rule of the Gaussian conditional, all checked against the real coder."""

from __future__ import annotations

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.base import get_scale_table

from helpers import tiny_tcm
from lae_vbr.models import CompressAIBackbone
from lae_vbr.models.rans import (
    CheckedEntropyBottleneck,
    CheckedGaussianConditional,
    bottleneck_coded_bits,
    coded_bits,
    stream_bytes,
)


def _gaussian() -> CheckedGaussianConditional:
    gaussian = CheckedGaussianConditional(None)
    gaussian.update_scale_table(get_scale_table(), force=True)
    return gaussian


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_table_indexes_are_compressais(dtype: torch.dtype) -> None:
    gaussian = _gaussian()
    gen = torch.Generator().manual_seed(0)
    table = gaussian.scale_table.to(dtype)
    scales = torch.cat([
        # beyond both ends of the table, exactly on its scales, just above them
        torch.exp(torch.empty(4000, dtype=dtype).uniform_(-4, 7, generator=gen)),
        table,
        torch.nextafter(table, torch.full_like(table, 1e9)),
        torch.tensor([0.0, -1.0], dtype=dtype),
    ]).reshape(1, 1, -1, 1)  # fmt: skip
    fast = gaussian.to(dtype).build_indexes(scales)
    assert torch.equal(fast, GaussianConditional.build_indexes(gaussian, scales))
    assert fast.dtype == torch.int32


def test_coded_bits_give_the_gaussian_streams_length_escapes_included() -> None:
    gaussian = _gaussian()
    gen = torch.Generator().manual_seed(1)
    scales = torch.exp(torch.empty(3, 8, 16, 16).uniform_(-2, 5, generator=gen))
    means = torch.randn(3, 8, 16, 16, generator=gen) * 3
    y = means + torch.randn(3, 8, 16, 16, generator=gen) * scales
    y[0, 0, :4, :4] += 5000.0  # far outside every table: escapes with long bypass codes
    y[1, 1, 0, :8] -= 300.0
    indexes = gaussian.build_indexes(scales)
    strings = gaussian.compress(y, indexes, means=means)
    bits = coded_bits(gaussian, gaussian.quantize(y, "symbols", means), indexes)
    assert [stream_bytes(float(b)) for b in bits.flatten(1).sum(1)] == [len(s) for s in strings]


def test_coded_bits_give_the_bottleneck_streams_length() -> None:
    torch.manual_seed(2)
    bottleneck = CheckedEntropyBottleneck(6).eval()
    bottleneck.update(force=True)
    z = torch.randn(2, 6, 9, 7) * 4
    z[1, 2, 0, 0] = 900.0  # an escape
    z_hat, bits = bottleneck_coded_bits(bottleneck, z)
    strings = bottleneck.compress(z)
    assert [stream_bytes(float(b)) for b in bits] == [len(s) for s in strings]
    assert torch.equal(z_hat, bottleneck.decompress(strings, z.shape[-2:]))
    assert isinstance(bottleneck, EntropyBottleneck)


@pytest.mark.parametrize("backbone", ["tcm", "mbt2018-mean", "bmshj2018-hyperprior"])
def test_latent_codecs_price_their_own_files(backbone: str) -> None:
    """Σ −log₂ p of the likelihoods misses the coder's tables; coded_bits does not."""
    torch.manual_seed(3)
    model = tiny_tcm() if backbone == "tcm" else CompressAIBackbone(backbone, N=32, M=64)
    model = model.eval()
    model.update(force=True)
    with torch.inference_mode():
        y = model.g_a(torch.rand(2, 3, 128, 192)) * 4  # a few quantisation steps per latent
        coded = model.code_latent(y, arithmetic="float32")
        bits = model.latent_codec.coded_bits(y)
    for key, strings in zip(("y", "z"), coded["strings"], strict=True):
        assert [stream_bytes(float(b)) for b in bits[key]] == [len(s) for s in strings]
