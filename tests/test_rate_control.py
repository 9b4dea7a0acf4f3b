"""The R-λ model, rate control to a target bpp, and ``lae-vbr compress --bpp``, on a tiny
model whose encoder-side LAE scales the latent up with λ."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from helpers import tiny_cfg, write_noisy_ramp
from lae_vbr.codec.cli import main
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.errors import RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.rate_control import RateControlWarning, encode_to_bpp
from lae_vbr.codec.rate_model import RateModel, fit_line
from lae_vbr.models.padding import pad_image
from lae_vbr.models.registry import save_codec_bundle


def scaling_vbr(cfg: dict) -> torch.nn.Module:
    """A tiny TCM-VBR whose encoder mask grows with the λ index (log m from 0 to 0.76)."""
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg["model"])
    with torch.no_grad():
        emb = model.modnet_ga.mask.lmd_map
        emb.fc_layers[0].weight.fill_(1.0)
        emb.fc_layers[0].bias.zero_()
        emb.fc_layers[1].weight.fill_(0.01)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ratecontrol")
    cfg = tiny_cfg()
    fixed_cfg = tiny_cfg(lae={"enabled": False})
    write_noisy_ramp(root / "img.png", 100, 120, noise=25, seed=0)
    return {
        "vbr": save_codec_bundle(root / "vbr.pt", scaling_vbr(cfg), cfg),
        "fixed": save_codec_bundle(
            root / "fixed.pt", hydra.utils.instantiate(fixed_cfg["model"]), fixed_cfg
        ),
        "image": root / "img.png",
    }


@pytest.fixture(scope="module")
def codec(files: dict[str, Path]) -> ImageCodec:
    return ImageCodec.load(files["vbr"])


@pytest.fixture(scope="module")
def image(files: dict[str, Path]) -> torch.Tensor:
    return read_image(files["image"])


# -- the R-λ model ---------------------------------------------------------------------------
def test_log_mask_sum_is_the_encoders_mask_on_the_padded_latent(codec, image) -> None:
    rates = RateModel(codec.model, image)
    assert rates.num_pixels == 100 * 120
    grid = [0.0, 1.5, 5.0]
    sums = rates.log2_mask_sum(grid)
    assert np.all(np.diff(sums) > 0)  # this mask grows with λ
    with torch.inference_mode():
        y = codec.model.g_a(pad_image(image, 128))
        for idx, s in zip(grid, sums, strict=True):
            assert s == pytest.approx(float(codec.model.log2_mask_sum(y, idx)), rel=1e-5)
            # compress() reports the mean natural-log mask of the latent it actually coded
            mean_log = float(codec.model.compress(image, idx)["log_mask_mean"])
            assert s == pytest.approx(mean_log * y.numel() / math.log(2), rel=1e-4)


def test_solve_inverts_the_mask_sum_and_clamps(codec, image) -> None:
    rates = RateModel(codec.model, image)
    goal = rates.bits(3.3)
    idx, clamped = rates.solve(goal)
    assert clamped is None and idx == pytest.approx(3.3, abs=1e-4)
    assert rates.solve(rates.bits(0.0) - 1.0) == (0.0, "low")
    assert rates.solve(rates.bits(5.0) + 1.0) == (5.0, "high")


def test_line_fits() -> None:
    s = np.array([-100.0, 0.0, 50.0, 200.0])
    exact = fit_line(s, s + 1234.0)
    assert exact.slope == 1.0 and exact.offset == pytest.approx(1234.0) and exact.r2 == 1.0
    free = fit_line(s, 0.7 * s + 10.0, slope=None)
    assert free.slope == pytest.approx(0.7) and free.offset == pytest.approx(10.0)
    fixed = fit_line(s, 0.7 * s + 10.0)  # slope forced to 1: worse, but C is the mean of R − S
    assert fixed.offset == pytest.approx(np.mean(-0.3 * s + 10.0)) and fixed.r2 < 1
    assert float(fixed.predict(0.0)) == pytest.approx(fixed.offset)


# -- rate control ----------------------------------------------------------------------------
def test_encode_to_bpp_two_encodes_best_file_and_header(codec, image) -> None:
    target = codec.encode(image, 3.0).bpp
    result = encode_to_bpp(codec, image, target)
    assert result.encodes <= 2 and result.attempts[0].lmbda_idx == 2.5  # middle of [0, 5]
    assert result.bpp == min((a.bpp for a in result.attempts), key=lambda b: abs(b - target))
    assert result.stream.lmbda_idx == result.lmbda_idx
    assert result.relative_error == pytest.approx(result.stream.bpp / target - 1)
    decoded = codec.decode(result.stream)
    assert decoded.shape == image.shape
    # more encodes re-fit the slope (secant) and close in on the target
    refined = encode_to_bpp(codec, image, target, max_encodes=5, tolerance=0.005)
    assert abs(refined.relative_error) <= max(0.005, abs(result.relative_error))
    assert abs(refined.relative_error) < 0.02


def test_targets_beyond_the_range_clamp_with_a_warning(codec, image) -> None:
    low, high = codec.encode(image, 0.0).bpp, codec.encode(image, 5.0).bpp
    with pytest.warns(RateControlWarning, match=r"below what the model reaches .* λ index 0"):
        result = encode_to_bpp(codec, image, low / 3)
    assert result.lmbda_idx == 0.0 and result.bpp == pytest.approx(low)
    assert result.clamped == "low"
    with pytest.warns(RateControlWarning, match=rf"about .*–{high:.4g} bpp.*highest rate"):
        result = encode_to_bpp(codec, image, high * 3)
    assert result.lmbda_idx == 5.0 and result.clamped == "high"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateControlWarning)
        encode_to_bpp(codec, image, 0.5 * (low + high))  # inside: no warning


@pytest.mark.parametrize("bad", [0.0, -0.3, float("nan"), float("inf")])
def test_bad_targets_are_rejected(codec, image, bad: float) -> None:
    with pytest.raises(RateError, match="positive number of bpp"):
        encode_to_bpp(codec, image, bad)


def test_fixed_rate_models_have_no_rate_control(files, image) -> None:
    with pytest.raises(RateError, match="fixed-rate"):
        encode_to_bpp(ImageCodec.load(files["fixed"]), image, 0.5)


# -- the command line ------------------------------------------------------------------------
def test_cli_bpp_writes_the_chosen_index(files, codec, image, tmp_path, capsys) -> None:
    target = codec.encode(image, 2.0).bpp
    out = tmp_path / "a.lae"
    assert (
        main(
            [
                "compress",
                str(files["image"]),
                str(out),
                "--bpp",
                f"{target:.4f}",
                "--checkpoint",
                str(files["vbr"]),
            ]
        )
        == 0
    )
    stream = read_bitstream(out)
    expected = encode_to_bpp(codec, image, float(f"{target:.4f}"))
    assert stream.lmbda_idx == expected.lmbda_idx and stream.bpp == expected.bpp
    printed = capsys.readouterr().out
    assert f"λ index {stream.lmbda_idx:g}" in printed and "encodes)" in printed
    assert (
        main(["decompress", str(out), str(tmp_path / "a.png"), "--checkpoint", str(files["vbr"])])
        == 0
    )


def test_cli_bpp_out_of_range_warns_on_one_line(files, tmp_path, capsys) -> None:
    args = ["compress", str(files["image"]), str(tmp_path / "b.lae"), "--bpp", "0.001"]
    assert main([*args, "--checkpoint", str(files["vbr"])]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("lae-vbr: warning: target 0.001 bpp is below") and "\n" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bpp", "nan"], "--bpp must be a positive number"),
        (["--bpp", "0"], "--bpp must be a positive number"),
        (["--bpp", "-2"], "--bpp must be a positive number"),
    ],
)
def test_cli_bad_bpp_is_a_usage_error(files, tmp_path, capsys, extra, message) -> None:
    args = ["compress", str(files["image"]), str(tmp_path / "c.lae"), *extra]
    assert main([*args, "--checkpoint", str(files["vbr"])]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and "Traceback" not in err
    assert not (tmp_path / "c.lae").exists()


def test_cli_bpp_with_a_fixed_rate_model_is_a_usage_error(files, tmp_path, capsys) -> None:
    args = ["compress", str(files["image"]), str(tmp_path / "d.lae"), "--bpp", "0.5"]
    assert main([*args, "--checkpoint", str(files["fixed"])]) == 2
    assert "fixed-rate: it takes no --quality, --lmbda or --bpp" in capsys.readouterr().err


def test_cli_bpp_excludes_the_other_rate_options(files, tmp_path, capsys) -> None:
    args = ["compress", str(files["image"]), str(tmp_path / "e.lae"), "--bpp", "0.5"]
    assert main([*args, "--quality", "2", "--checkpoint", str(files["vbr"])]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
