"""The R-λ model, the entropy model's rate estimate, rate control to a bit rate, a file size
or a total size for a set, and ``lae-vbr compress --bpp/--size``, on a tiny model whose
encoder-side LAE scales the latent up with λ."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from helpers import tiny_cfg, write_noisy_ramp
from lae_vbr.cli import main
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.errors import RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.probe import ImageProbe, psnr_8bit
from lae_vbr.codec.rate_control import (
    RateControlWarning,
    encode_set_to_size,
    encode_to_bpp,
    encode_to_size,
)
from lae_vbr.codec.rate_model import RateModel, fit_line
from lae_vbr.codec.targets import TargetError, parse_size
from lae_vbr.models.padding import pad_image
from lae_vbr.models.registry import save_codec_bundle

#: Targets at these fractions of the image's own range of rates.
FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


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


def scaling_files(root: Path) -> dict[str, Path]:
    """The scaling model, a fixed-rate twin and two test images, written under ``root``."""
    cfg = tiny_cfg()
    fixed_cfg = tiny_cfg(lae={"enabled": False})
    write_noisy_ramp(root / "img.png", 100, 120, noise=25, seed=0)
    write_noisy_ramp(root / "other.png", 72, 90, noise=10, seed=1)
    return {
        "vbr": save_codec_bundle(root / "vbr.pt", scaling_vbr(cfg), cfg),
        "fixed": save_codec_bundle(
            root / "fixed.pt", hydra.utils.instantiate(fixed_cfg["model"]), fixed_cfg
        ),
        "image": root / "img.png",
        "other": root / "other.png",
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return scaling_files(tmp_path_factory.mktemp("ratecontrol"))


@pytest.fixture(scope="module")
def codec(files: dict[str, Path]) -> ImageCodec:
    return ImageCodec.load(files["vbr"])


@pytest.fixture(scope="module")
def image(files: dict[str, Path]) -> torch.Tensor:
    return read_image(files["image"])


@pytest.fixture(scope="module")
def rate_range(codec: ImageCodec, image: torch.Tensor) -> tuple[float, float]:
    """The image's file rate (bpp) at the lowest and the highest λ index."""
    return codec.encode(image, 0.0).bpp, codec.encode(image, 5.0).bpp


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


# -- the probe: estimates, reconstructions and encodes from one analysis ---------------------
def test_probe_encodes_the_plain_file_and_reconstructs_the_decoded_image(codec, image) -> None:
    probe = ImageProbe(codec, image)
    for idx in (0.0, 2.3, 5.0):
        stream = probe.encode(idx)
        assert stream.to_bytes() == codec.encode(image, idx).to_bytes()  # g_a not re-run
        decoded = codec.decode(stream)
        # the same quantised latent through the decoder; only float arithmetic differs
        assert probe.psnr(idx) == pytest.approx(psnr_8bit(image, decoded), abs=1e-3)
    assert (probe.encodes, probe.reconstructions) == (3, 3)


def test_estimate_predicts_the_files_length_and_is_cached(codec, image) -> None:
    probe = ImageProbe(codec, image)
    grid = [0.0, 1.0, 2.5, 4.0, 5.0]
    estimates = [probe.estimate_bits(idx) for idx in grid]
    files = [8.0 * codec.encode(image, idx).num_bytes for idx in grid]
    assert np.all(np.diff(estimates) > 0) and np.all(np.diff(files) > 0)
    # priced with the coder's own tables: the file's length but for the rare symbol whose
    # float32 scale picks another table than the coder's float64 one
    assert np.allclose(files, estimates, rtol=1e-3, atol=0), (files, estimates)
    assert probe.estimates == len(grid)
    probe.estimate_bits(2.5)
    assert probe.estimates == len(grid)  # kept


# -- rate control to a bit rate ---------------------------------------------------------------
def test_encode_to_bpp_meets_targets_across_the_range(codec, image, rate_range) -> None:
    low, high = rate_range
    errors = []
    for fraction in FRACTIONS:
        target = low + fraction * (high - low)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RateControlWarning)  # inside the range: none
            result = encode_to_bpp(codec, image, target)
        assert result.method == "estimate" and 1 <= result.encodes <= 2
        assert result.estimates >= 1
        assert result.bpp == min((a.bpp for a in result.attempts), key=lambda b: abs(b - target))
        # the file is the plain encode at the chosen index, which its header records
        assert result.stream.to_bytes() == codec.encode(image, result.lmbda_idx).to_bytes()
        errors.append(abs(result.relative_error))
    assert max(errors) <= 0.015, errors
    assert codec.decode(result.stream).shape == image.shape


def test_a_loose_tolerance_stops_after_one_encode(codec, image, rate_range) -> None:
    target = sum(rate_range) / 2
    assert encode_to_bpp(codec, image, target, tolerance=0.5).encodes == 1
    assert encode_to_bpp(codec, image, target, tolerance=0.0, max_encodes=3).encodes <= 3


def test_the_papers_rlambda_method_stays_selectable(codec, image) -> None:
    target = codec.encode(image, 3.0).bpp
    result = encode_to_bpp(codec, image, target, method="rlambda")
    assert result.encodes == 2 and result.attempts[0].lmbda_idx == 2.5  # middle of [0, 5]
    assert result.estimates == 0 and result.method == "rlambda"
    assert result.relative_error == pytest.approx(result.stream.bpp / target - 1)
    # more encodes re-fit the slope (secant) and close in on the target
    refined = encode_to_bpp(codec, image, target, method="rlambda", max_encodes=5, tolerance=0.005)
    assert abs(refined.relative_error) <= max(0.005, abs(result.relative_error))
    assert abs(refined.relative_error) < 0.02
    with pytest.raises(ValueError, match="unknown rate-control method"):
        encode_to_bpp(codec, image, target, method="magic")


@pytest.mark.parametrize("method", ["estimate", "rlambda"])
def test_targets_beyond_the_range_clamp_with_a_warning(codec, image, rate_range, method) -> None:
    low, high = rate_range
    with pytest.warns(RateControlWarning, match=r"below what the model reaches .* λ index 0"):
        result = encode_to_bpp(codec, image, low / 3, method=method)
    assert result.lmbda_idx == 0.0 and result.bpp == pytest.approx(low)
    assert result.clamped == "low"
    with pytest.warns(RateControlWarning, match=rf"about .*–{high:.4g} bpp.*highest rate"):
        result = encode_to_bpp(codec, image, high * 3, method=method)
    assert result.lmbda_idx == 5.0 and result.clamped == "high"


@pytest.mark.parametrize("bad", [0.0, -0.3, float("nan"), float("inf"), "x"])
def test_bad_targets_are_rejected(codec, image, bad: float) -> None:
    with pytest.raises(RateError, match="positive number of bpp"):
        encode_to_bpp(codec, image, bad)


def test_fixed_rate_models_have_no_rate_control(files, image) -> None:
    fixed = ImageCodec.load(files["fixed"])
    for control in (encode_to_bpp, encode_to_size):
        with pytest.raises(RateError, match="fixed-rate"):
            control(fixed, image, 500)


# -- a file size, and a total size for a set ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "size"),
    [("1500", 1500), ("20k", 20_000), ("20K", 20_000), ("1.5M", 1_500_000), ("64KiB", 65_536),
     ("2Mi", 2 * 1024**2), ("12kB", 12_000), (" 7 k ", 7000), (2.9, 2)],
)  # fmt: skip
def test_sizes_take_decimal_and_binary_suffixes(text, size) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["abc", "12q", "1m", "2G", "0", "-3k", "0.5", "nan", "k"])
def test_bad_sizes_are_refused(text) -> None:
    with pytest.raises(TargetError):
        parse_size(text)


def test_encode_to_size_fits_the_budget(codec, image, rate_range) -> None:
    low, high = rate_range
    pixels = image.shape[-2] * image.shape[-1]
    for fraction in FRACTIONS:
        budget = int((low + fraction * (high - low)) * pixels / 8)
        result = encode_to_size(codec, image, budget)
        assert result.num_bytes <= budget, (budget, result.attempts)
        assert result.num_bytes >= 0.985 * budget and result.max_bytes == budget
        assert result.relative_error <= 0
        assert result.stream.to_bytes() == codec.encode(image, result.lmbda_idx).to_bytes()
    assert encode_to_size(codec, image, "2k").max_bytes == 2000
    with pytest.raises(RateError, match="not a size"):
        encode_to_size(codec, image, "12q")


def test_a_budget_below_the_smallest_file_warns(codec, image, rate_range) -> None:
    with pytest.warns(RateControlWarning, match=r"target 100 bytes .* below"):
        result = encode_to_size(codec, image, 100)
    assert result.lmbda_idx == 0.0 and result.clamped == "low"


def test_a_set_fits_a_total_size_at_one_lambda(codec, files, image) -> None:
    images = [image, read_image(files["other"])]
    ends = [sum(codec.encode(x, idx).num_bytes for x in images) for idx in (0.0, 5.0)]
    budget = (ends[0] + ends[1]) // 2
    result = encode_set_to_size(codec, images, budget)
    streams = result.stream.streams
    assert result.num_bytes == sum(s.num_bytes for s in streams) <= budget
    assert result.num_bytes >= 0.985 * budget and 1 <= result.encodes <= 2
    assert {s.lmbda_idx for s in streams} == {result.lmbda_idx}  # equal slope: one λ
    for x, stream in zip(images, streams, strict=True):
        assert stream.to_bytes() == codec.encode(x, result.lmbda_idx).to_bytes()
    with pytest.warns(RateControlWarning, match="on these images"):
        encode_set_to_size(codec, images, ends[0] // 2)


# -- the command line ------------------------------------------------------------------------
def _compress(files, out, *extra) -> int:
    return main(["compress", str(files["image"]), str(out), *map(str, extra),
                 "--checkpoint", str(files["vbr"])])  # fmt: skip


def test_cli_bpp_writes_the_chosen_index(files, codec, image, tmp_path, capsys) -> None:
    target = codec.encode(image, 2.0).bpp
    out = tmp_path / "a.lae"
    assert _compress(files, out, "--bpp", f"{target:.4f}") == 0
    stream = read_bitstream(out)
    expected = encode_to_bpp(codec, image, float(f"{target:.4f}"))
    assert stream.lmbda_idx == expected.lmbda_idx and stream.bpp == expected.bpp
    printed = capsys.readouterr().out
    assert f"λ index {stream.lmbda_idx:g}" in printed and "encode" in printed
    assert (
        main(["decompress", str(out), str(tmp_path / "a.png"), "--checkpoint", str(files["vbr"])])
        == 0
    )


def test_cli_size_keeps_the_file_within_the_budget(files, tmp_path, capsys) -> None:
    out = tmp_path / "s.lae"
    assert _compress(files, out, "--size", "2.5k") == 0
    assert out.stat().st_size <= 2500
    assert "(at most 2500 bytes, " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--bpp", "0.001", "target 0.001 bpp is below"),
     ("--size", "50", "target 50 bytes (0.03333 bpp) is below")],
)  # fmt: skip
def test_cli_unreachable_targets_warn_on_one_line(files, tmp_path, capsys, option, value,
                                                 message) -> None:  # fmt: skip
    assert _compress(files, tmp_path / "b.lae", option, value) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lae-vbr: warning: {message}") and "\n" not in err
    assert "reaches on this image (about " in err and (tmp_path / "b.lae").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bpp", "nan"], "--bpp must be a positive number"),
        (["--bpp", "0"], "--bpp must be a positive number"),
        (["--bpp", "-2"], "--bpp must be a positive number"),
        (["--bpp", "abc"], "argument --bpp: invalid float value: 'abc'"),
        (["--size", "12q"], "--size: not a size: '12q'"),
        (["--size", "0"], "--size: a size must be a positive number of bytes"),
        (["--psnr", "-1"], "--psnr must be a positive number of dB"),
        (["--psnr", "x"], "argument --psnr: invalid float value"),
        (["--bpp", "0.5", "--quality", "2"], "argument --quality: not allowed with argument --bpp"),
        (["--psnr", "30", "--size", "10k"], "argument --size: not allowed with argument --psnr"),
        (["--total-size", "10k"], "--total-size is for a folder of images"),
        (["--psnr", "30", "--refine-steps", "2"], "not with --psnr or --total-size"),
    ],
)
def test_cli_bad_targets_are_usage_errors_before_the_model_loads(
    files, tmp_path, capsys, monkeypatch, extra, message
) -> None:
    from lae_vbr.cli import commands

    monkeypatch.setattr(commands, "load_codec_for", lambda *a: pytest.fail("the model was loaded"))
    assert _compress(files, tmp_path / "c.lae", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("lae-vbr: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err and "usage:" not in err
    assert not (tmp_path / "c.lae").exists()


def test_cli_targets_with_a_fixed_rate_model_are_a_usage_error(files, tmp_path, capsys) -> None:
    for option, value in (("--bpp", "0.5"), ("--size", "1k"), ("--psnr", "30")):
        args = ["compress", str(files["image"]), str(tmp_path / "d.lae"), option, value]
        assert main([*args, "--checkpoint", str(files["fixed"])]) == 2
        err = capsys.readouterr().err
        assert "fixed-rate: it takes no --quality, --lmbda, --bpp, --size, --psnr" in err
