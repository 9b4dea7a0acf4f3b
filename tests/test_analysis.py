"""The model's analysis API (``model.analyse(x)``), which every coding path above the model
uses: equal to the model's own compress / forward, banded as plain coding is, and the searches
on it robust to a rate that does not move with λ (an LAE still at the identity)."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch

from helpers import randomize_lae, tiny_cfg, write_noisy_ramp
from lae_vbr.cli import main
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.errors import RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.models import banded
from lae_vbr.models.registry import save_codec_bundle


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = hydra.utils.instantiate(tiny_cfg()["model"]).eval()
    randomize_lae(model.modnet_ga, seed=1)
    randomize_lae(model.modnet_gs, seed=2)
    model.update()
    return model


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("idx", [0.0, 2.5, 5.0])
def test_analysis_streams_equal_the_models_compress(model, x, idx) -> None:
    with torch.inference_mode():
        plain = model.compress(x, idx)
    coded = model.analyse(x).compress(idx, "float64")
    assert coded["strings"] == plain["strings"]
    assert list(coded["symbols_crc"]) == list(plain["symbols_crc"])
    assert coded["shape"] == (70, 90)


def test_analysis_answers_as_the_forward_pass(model, x) -> None:
    analysis = model.analyse(x)
    with torch.no_grad():
        out = model(x, 3.0)
        assert torch.equal(analysis.latent(3.0), out["y"])
        assert torch.equal(analysis.reconstruct(3.0), out["x_hat"].clamp(0, 1))
        y_raw = model.g_a(torch.nn.functional.pad(x, (0, 38, 0, 58), mode="replicate"))
    sums = analysis.log2_mask_sum([0.0, 3.0, 5.0])
    direct = [float(model.log2_mask_sum(y_raw, i)) for i in (0.0, 3.0, 5.0)]
    assert sums.tolist() == pytest.approx(direct, rel=1e-6)
    bits = analysis.coded_bits(3.0)
    assert set(bits) == {"y", "z"} and float(bits["y"][0]) > 0


def test_analysis_runs_the_analysis_transform_in_bands(model, x, monkeypatch) -> None:
    """The memory of rate control on a large image: g_a runs as plain coding runs it."""
    calls: list[int] = []
    real = banded.run_layers_in_bands

    def spy(transform, inputs, *args, **kwargs):
        calls.append(inputs.shape[-1])
        return real(transform, inputs, *args, **kwargs)

    monkeypatch.setattr("lae_vbr.models.analysis.run_layers_in_bands", spy)
    model.analyse(x)
    assert calls == [128]  # the padded image, through the banded runner


def test_large_images_recompute_the_latent_codec_for_the_same_gradient(
    model, x, monkeypatch
) -> None:
    """Above MIN_PIXELS the straight-through latent codec's networks are checkpointed one by
    one (their intermediates recomputed in the backward pass): the same loss and gradients
    as keeping them."""
    analysis = model.analyse(x)

    def gradients() -> tuple[torch.Tensor, ...]:
        y, z = (t.clone().requires_grad_(True) for t in analysis.refinement_start(2.0))
        out = analysis.decode_relaxed(y, z, 2.0)
        rate = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
        loss = rate + 100 * (out["x_hat"] - x).pow(2).sum()
        return (loss.detach(), *torch.autograd.grad(loss, (y, z)))

    kept = gradients()
    calls: list[bool] = []
    real = torch.utils.checkpoint.checkpoint

    def spy(*args, **kwargs):
        calls.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr("lae_vbr.models.analysis.MIN_PIXELS", 0)
    monkeypatch.setattr("lae_vbr.models.entropy.checkpoint", spy)
    recomputed = gradients()
    # the hyper-syntheses, and per slice: mean attention, mean transform, scale attention with
    # its transform, LRP
    assert len(calls) == 2 + 4 * model.latent_codec.num_slices
    for a, b in zip(kept, recomputed, strict=True):
        assert torch.equal(a, b)


def test_large_images_give_freed_memory_back_between_the_passes(model, x, monkeypatch) -> None:
    """Above MIN_PIXELS a relaxed decode releases the heap's freed memory before the latent
    codec, before g_s, and (a gradient hook) between g_s's backward pass and the latent
    codec's; the loss and gradients are those without the releases."""
    analysis = model.analyse(x)
    y0, z0 = analysis.refinement_start(2.0)

    def step() -> tuple[torch.Tensor, ...]:
        y, z = (t.clone().requires_grad_(True) for t in (y0, z0))
        out = analysis.decode_relaxed(y, z, 2.0)
        loss = (out["x_hat"] - x).pow(2).sum() - torch.log2(out["likelihoods"]["y"]).sum()
        counted.append(len(released))
        return (loss.detach(), *torch.autograd.grad(loss, (y, z)))

    released: list[bool] = []
    counted: list[int] = []
    monkeypatch.setattr(
        "lae_vbr.models.analysis.release_freed_memory", lambda: released.append(True)
    )
    below = step()
    assert released == [] and counted == [0]
    monkeypatch.setattr("lae_vbr.models.analysis.MIN_PIXELS", 0)
    above = step()
    assert counted[-1] == 2 and len(released) == 3  # the third one in the backward pass
    for a, b in zip(below, above, strict=True):
        assert torch.equal(a, b)


def test_capabilities_are_asked_of_the_model(model) -> None:
    assert model.has_rate_model and model.can_refine
    fixed = hydra.utils.instantiate(tiny_cfg(lae={"enabled": False})["model"])
    assert fixed.can_refine and not fixed.has_rate_model
    with pytest.raises(RateError, match="needs a variable-rate model with an encoder-side LAE"):
        fixed.analyse(torch.rand(1, 3, 8, 8)).log2_mask_sum([0.0])


@pytest.fixture(scope="module")
def identity_lae_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A variable-rate model whose LAEs are still the identity (as right after ``init_from``
    of a fixed-rate checkpoint): its rate and quality do not move with λ."""
    root = tmp_path_factory.mktemp("identity")
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg["model"])
    return {
        "model": save_codec_bundle(root / "identity.pt", model, cfg),
        "image": write_noisy_ramp(root / "img.png", 48, 64, noise=20, seed=0),
    }


@pytest.mark.parametrize(
    ("option", "end", "index"),
    [
        (["--bpp", "0.01"], "below", 0.0),
        (["--bpp", "300"], "above", 5.0),
        (["--size", "10"], "below", 0.0),
        (["--size", "1M"], "above", 5.0),
        (["--psnr", "80"], "above", 5.0),
        (["--psnr", "1"], "below", 0.0),
    ],
)
def test_a_flat_rate_curve_gets_the_out_of_range_warning_and_a_valid_file(
    identity_lae_files, tmp_path, capsys, option, end, index
) -> None:
    files = identity_lae_files
    out = tmp_path / "out.lae"
    args = ["compress", str(files["image"]), str(out), *option]
    assert main([*args, "--checkpoint", str(files["model"])]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and f"is {end} what the model reaches" in warnings[0]
    stream = read_bitstream(out)
    assert stream.lmbda_idx == index
    codec = ImageCodec.load(files["model"])
    assert codec.decode(stream).shape == read_image(files["image"]).shape
