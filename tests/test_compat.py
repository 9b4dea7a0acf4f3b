"""Invariants of the composed-codec redesign: files written before it still decode to the same
image, the same image still codes to the same bytes, and the models follow CompressAI's
conventions (registry names, default rate argument, decompress returns the compressed size).

``tests/data/demo_q*_v1.lae`` were written by the first bundled demo model (a tiny TCM-VBR, kept
as ``tests/data/demo_tcm_tiny.pt``) with the code before the redesign (hooks around the
backbone), from ``ramp_40x56.png``; ``*_decoded.png`` is what that code decoded them to
(1 thread).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.registry import MODELS
from PIL import Image

from helpers import tiny_tcm, tiny_vbr
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.data.tensors import tensor_to_uint8
from lae_vbr.models import TCM, TCMVBR, RateError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def demo() -> ImageCodec:
    return ImageCodec.load(DATA / "demo_tcm_tiny.pt")


@pytest.mark.parametrize("quality", ["0", "2.5"])
def test_files_written_before_the_redesign_decode_and_recode(demo: ImageCodec, quality: str):
    path = DATA / f"demo_q{quality}_v1.lae"
    stream = read_bitstream(path)
    decoded = tensor_to_uint8(demo.decode(stream)).astype(int)
    before = np.asarray(Image.open(DATA / f"demo_q{quality}_v1_decoded.png")).astype(int)
    assert decoded.shape == before.shape
    # the same arithmetic on the same kind of machine: at most float rounding (±1 level)
    assert np.abs(decoded - before).max() <= 1
    assert (decoded == before).mean() > 0.99
    assert stream.version == 1 and stream.arithmetic == "float32" and not stream.checked
    # the same computation as before the redesign gives the same streams
    x = read_image(DATA / "ramp_40x56.png")
    with torch.inference_mode():
        coded = demo.model.compress(x, stream.lmbda_idx, arithmetic="float32")
    assert coded["strings"] == [[stream.y_string], [stream.z_string]]
    # and today's files (format version 2, float64 entropy parameters) decode alike
    again = demo.encode(x, float(quality))
    assert again.arithmetic == "float64" and again.checked
    redecoded = tensor_to_uint8(demo.decode(type(again).from_bytes(again.to_bytes())))
    assert np.abs(redecoded.astype(int) - before).max() <= 1


def test_registered_in_compressai() -> None:
    assert MODELS["tcm"] is TCM and MODELS["tcm-vbr"] is TCMVBR


@pytest.mark.parametrize("make", [tiny_tcm, tiny_vbr])
def test_compressai_calls_with_the_default_rate(make) -> None:
    """``model(x)``, ``compress(x)`` and ``decompress(strings, shape)`` as CompressAI users
    call them; a variable-rate model then codes at its highest λ index."""
    model = make().eval()
    model.update()
    x = torch.rand(2, 3, 45, 70)
    with torch.inference_mode():
        out = model(x)
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])
        top = model.compress(x, model.num_lmbdas - 1)
    assert out["x_hat"].shape == x.shape and dec["x_hat"].shape == x.shape
    assert tuple(enc["shape"]) == (45, 70)
    assert enc["strings"] == top["strings"]
    assert model.default_lmbda_idx == model.num_lmbdas - 1


def test_fixed_rate_is_the_one_lambda_case() -> None:
    model = tiny_tcm().eval()
    x = torch.rand(1, 3, 32, 32)
    assert not model.variable_rate and model.num_lmbdas == 1
    with torch.inference_mode():
        assert torch.equal(model(x)["x_hat"], model(x, 0.0)["x_hat"])
        with pytest.raises(RateError, match="fixed-rate"):
            model(x, 1.0)


@pytest.mark.parametrize("cls", [TCM, TCMVBR])
def test_from_state_dict_rebuilds_the_architecture(cls: type) -> None:
    """CompressAI's ``Model.from_state_dict``, for reference-layout state dicts."""
    model = cls(N=64, M=192, num_slices=4, max_support_slices=2)
    rebuilt = cls.from_state_dict(model.state_dict())
    assert type(rebuilt) is cls and (rebuilt.N, rebuilt.M) == (model.N, model.M)  # CompressAI's
    assert rebuilt.variable_rate == model.variable_rate
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    assert rebuilt.latent_codec.max_support_slices == 2
