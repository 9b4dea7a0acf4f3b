"""Region-of-interest coding: λ-index maps in the model, the loss, the file, the CLI and rate
control, with tiny random-weight models (and the bundled model for the command line)."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (
    randomize_lae,
    tiny_cfg,
    tiny_codec_with_laes,
    tiny_tcm,
    tiny_vbr,
    write_noisy_ramp,
)
from lae_vbr.cli import main
from lae_vbr.codec.container import Bitstream, ContainerError, ModelId, RateMap, read_bitstream
from lae_vbr.codec.errors import DecodeError, RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.probe import psnr_8bit
from lae_vbr.codec.rate_control import encode_to_bpp, encode_to_size
from lae_vbr.codec.regions import GrayImage, RoiRegion, quality_map_levels, read_gray
from lae_vbr.codec.request import Target, code_image
from lae_vbr.codec.targets import TargetError
from lae_vbr.config import ConfigError
from lae_vbr.losses import RateDistortionLoss
from lae_vbr.models.gain_vbr import GainVariableRate
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, save_codec_bundle
from lae_vbr.module import CompressionModule
from lae_vbr.quality_maps import MAP_KINDS, QualityMapSampler


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vbr(contextual: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_vbr() if contextual else _no_context()
    randomize_lae(model.modnet_ga, seed=1)
    randomize_lae(model.modnet_gs, seed=2)
    return model.eval()


def _no_context() -> torch.nn.Module:
    from lae_vbr.models import VariableRateCodec

    return VariableRateCodec(tiny_tcm(), num_lmbdas=6, contextual=False)


# -- the model -------------------------------------------------------------------------------
@pytest.mark.parametrize("contextual", [True, False])
def test_a_constant_map_is_bit_for_bit_its_index(contextual: bool) -> None:
    model = _vbr(contextual)
    x = torch.rand(2, 3, 70, 100, generator=torch.Generator().manual_seed(3))
    grid = model.latent_shape(70, 100)
    for index in (0.0, 2.5, 5.0):
        constant = torch.full((1, 1, *grid), index)
        with torch.no_grad():
            plain, mapped = model(x, index), model(x, constant)
        assert torch.equal(plain["x_hat"], mapped["x_hat"])
        for key in plain["likelihoods"]:
            assert torch.equal(plain["likelihoods"][key], mapped["likelihoods"][key])
    model.update()
    plain = model.compress(x, 1.75)
    mapped = model.compress(x, torch.full((2, 1, *grid), 1.75))
    assert plain["strings"] == mapped["strings"]
    assert plain["symbols_crc"] == mapped["symbols_crc"]
    decoded = model.decompress(mapped["strings"], mapped["shape"], torch.full((1, 1, *grid), 1.75))
    direct = model.decompress(plain["strings"], (70, 100), 1.75)
    assert torch.equal(decoded["x_hat"], direct["x_hat"])


def test_a_map_codes_each_position_at_its_own_index() -> None:
    model = _vbr()
    model.update()
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(4))
    grid = model.latent_shape(64, 128)
    low = torch.zeros((1, 1, *grid))
    boxed = low.clone()
    boxed[..., : grid[0] // 2, : grid[1] // 2] = 5.0
    sizes = [len(model.compress(x, rate)["strings"][0][0]) for rate in (low, boxed, 5.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    out = model.compress(x, boxed)
    decoded = model.decompress(out["strings"], out["shape"], boxed)["x_hat"]
    assert decoded.shape == x.shape


def test_maps_of_the_wrong_shape_or_range_and_models_without_laes_are_refused() -> None:
    model = _vbr()
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(RateError, match="latent is"):
        model(x, torch.zeros(1, 1, 3, 3))
    with pytest.raises(RateError, match="outside the trained range"):
        model(x, torch.full((1, 1, *model.latent_shape(64, 64)), 5.5))
    with pytest.raises(RateError, match=r"\(batch or 1, 1, height, width\)"):
        model(x, torch.zeros(1, 2, 4, 4))
    fixed = tiny_tcm()
    assert not fixed.takes_rate_map
    with pytest.raises(RateError, match="fixed-rate model"):
        fixed(x, torch.zeros(1, 1, 4, 4))
    gain = GainVariableRate("mbt2018-mean-vbr", PAPER_MSE_LMBDAS, N=16, M=24)
    assert not gain.takes_rate_map
    with pytest.raises(RateError, match="cannot code with a quality map"):
        gain(x, torch.zeros(1, 1, 4, 4))


# -- training ---------------------------------------------------------------------------------
def test_the_loss_of_a_constant_map_is_the_loss_of_its_index() -> None:
    loss = RateDistortionLoss(PAPER_MSE_LMBDAS)
    x = torch.rand(2, 3, 40, 56)
    x_hat = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    out = {"x_hat": x_hat, "likelihoods": {"y": torch.rand(2, 8, 3, 4).clamp_min(0.01)}}
    index = torch.tensor([1.0, 3.5])
    plain = loss(out, x, index)
    mapped = loss(out, x, index.reshape(2, 1, 1, 1).expand(2, 1, 3, 4).clone())
    torch.testing.assert_close(plain["loss"], mapped["loss"], rtol=1e-6, atol=0)
    # a map that is low where the error is: a lower distortion term than uniform high
    half = torch.full((2, 1, 3, 4), 5.0)
    half[..., :2] = 0.0
    assert loss(out, x, half)["loss"] < loss(out, x, torch.tensor([5.0, 5.0]))["loss"]


def test_the_sampler_draws_every_kind_within_range() -> None:
    for kind in MAP_KINDS:
        sampler = QualityMapSampler({kind: 1.0}, seed=1)
        maps = sampler(16, (8, 12), 6)
        assert maps.shape == (16, 1, 8, 12)
        assert maps.min() >= 0 and maps.max() <= 5
        if kind != "uniform":
            assert any(m.unique().numel() > 1 for m in maps), kind
    again = QualityMapSampler(seed=1)(4, (8, 8), 6)
    assert torch.equal(again, QualityMapSampler(seed=1)(4, (8, 8), 6))
    with pytest.raises(ValueError, match="unknown quality-map kinds"):
        QualityMapSampler({"stripes": 1.0})
    with pytest.raises(ValueError, match="distortion=mse"):
        RateDistortionLoss([0.1, 1.0], "ms-ssim", quality_maps=QualityMapSampler())


def test_map_training_needs_a_model_with_laes() -> None:
    loss = RateDistortionLoss(PAPER_MSE_LMBDAS, quality_maps=QualityMapSampler(seed=0))
    gain = GainVariableRate("mbt2018-mean-vbr", PAPER_MSE_LMBDAS, N=16, M=24)
    with pytest.raises(ConfigError, match=r"loss\.quality_maps"):
        CompressionModule(gain, loss)
    module = CompressionModule(_vbr().train(), loss)
    rate = loss.sample_rate(2, module.model.latent_shape(64, 64))
    assert rate.shape == (2, 1, 8, 8)  # TCM pads 64 to 128
    out = module(torch.rand(2, 3, 64, 64), rate)
    loss(out, torch.rand(2, 3, 64, 64), rate)["loss"].backward()
    assert module.model.modnet_ga.mask.lmd_map.fc_layers[0].weight.grad is not None


# -- the file -----------------------------------------------------------------------------------
def _stream(rate_map: RateMap | None, base: float = 1.5) -> Bitstream:
    model = ModelId("t", bytes(8))
    return Bitstream(model, base, 70, 100, bytes(8), bytes(12), "float64", 1, 2, rate_map=rate_map)


def test_a_map_makes_a_version_3_file_and_one_index_a_version_2_file() -> None:
    plain = _stream(None)
    assert plain.to_bytes()[3] == 2
    levels = bytes([0] * 20 + [32] * 8 + [0] * 4)
    rate_map = RateMap(4, 8, levels)
    data = _stream(rate_map).to_bytes()
    assert data[3] == 3
    back = Bitstream.from_bytes(data)
    assert back.rate_map == rate_map and back.version == 3
    assert back.num_bytes == len(data) == plain.num_bytes + 3 + len(back.map_bytes)
    described = back.describe()["quality_map"]
    assert described["lowest_idx"] == 1.5 and described["highest_idx"] == 3.5
    assert described["roi_share"] == 0.25


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_damaged_or_inconsistent_maps_are_refused() -> None:
    stream = _stream(RateMap(4, 8, bytes(range(32))))
    data = stream.to_bytes()
    start = len(stream.header())
    end = start + len(stream.map_bytes)
    garbage = data[:start] + b"\xff" * (end - start) + data[end:-4]
    with pytest.raises(ContainerError, match="quality map"):
        Bitstream.from_bytes(_with_crc(garbage))
    header = bytearray(stream.header())
    rows_at = header.index(bytes([4, 8, len(stream.map_bytes)]))
    header[rows_at] = 5  # 5×8 declared, 4×8 stored
    with pytest.raises(ContainerError, match="exactly 40 levels"):
        Bitstream.from_bytes(_with_crc(bytes(header) + data[start:-4]))
    as_v2 = bytearray(data[:-4])
    as_v2[3] = 2
    with pytest.raises(ContainerError, match="unknown flags"):
        Bitstream.from_bytes(_with_crc(bytes(as_v2)))
    with pytest.raises(ContainerError, match="needs 32 levels"):
        RateMap(4, 8, bytes(31))
    with pytest.raises(ContainerError, match="variable-rate"):
        Bitstream(ModelId("t", bytes(8)), None, 9, 9, bytes(8), bytes(8),
                  rate_map=RateMap(1, 1, b"\0"))  # fmt: skip


# -- the codec and the command line -------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("roi")
    cfg, vbr = tiny_codec_with_laes()
    mask = np.zeros((60, 90), np.uint8)
    mask[15:45, 30:60] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "empty.png")
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (16, 1))
    Image.fromarray(ramp).save(root / "map.png")
    (root / "text.png").write_text("not an image")
    fixed_cfg = tiny_cfg(lae={"enabled": False})
    fixed = hydra.utils.instantiate(fixed_cfg["model"])
    return {
        "root": root,
        "vbr": save_codec_bundle(root / "tiny.pt", vbr, cfg),
        "fixed": save_codec_bundle(root / "fixed.pt", fixed, fixed_cfg),
        "image": write_noisy_ramp(root / "img.png", 120, 180, noise=20, seed=0),
    }


@pytest.fixture(scope="module")
def codec(files: dict[str, Path]) -> ImageCodec:
    return ImageCodec.load(files["vbr"])


def test_roi_files_decode_to_what_the_encoder_reconstructs(files, codec) -> None:
    x = read_image(files["image"])
    mask = read_gray(files["root"] / "mask.png", "ROI mask")
    grid = codec.latent_shape(120, 180)
    rate_map = RoiRegion.of(mask, (120, 180), grid, 2.0, codec.max_index)(1.0)
    stream = codec.encode(x, 1.0, rate_map)
    back = Bitstream.from_bytes(stream.to_bytes())
    decoded = codec.decode(back)
    with torch.no_grad():
        expected = codec.model.analyse(x).reconstruct(codec.rate_input(1.0, rate_map))
    assert psnr_8bit(expected, decoded) > 45
    uniform = codec.encode(x, 1.0)  # random weights: the rate need not grow with the index
    assert uniform.y_string != stream.y_string and uniform.rate_map is None
    assert stream.num_bytes == len(stream.to_bytes()) > uniform.num_bytes - len(uniform.y_string)
    roi = np.frombuffer(rate_map.levels, np.uint8).reshape(grid) > 0
    rows, cols = np.nonzero(roi)
    assert rate_map.highest_offset == 2.0 and 0 < roi.mean() < 1
    # the ROI covers the mask's blocks (rows 15–44 and columns 30–59 of the 60×90 mask, i.e.
    # pixels 30–89 × 60–119 of the image)
    assert rows.min() == 30 // 16 and rows.max() == 89 // 16
    assert cols.min() == 60 // 16 and cols.max() == 119 // 16
    with pytest.raises(RateError, match="latent grid"):
        codec.encode(x[..., :40], 1.0, rate_map)  # 180 → 256 columns padded, 40 → 128
    with pytest.raises(RateError, match="beyond the trained range"):
        too_high = bytes([32]) * len(rate_map.levels)  # 4 + 2 > 5
        codec.encode(x, 4.0, RateMap(rate_map.rows, rate_map.cols, too_high))
    bad = dataclasses.replace(back, width=40)
    with pytest.raises(DecodeError, match="quality map does not fit"):
        codec.decode(bad)


def test_roi_is_clamped_to_the_highest_index() -> None:
    mask = GrayImage(np.full((4, 4), 255, np.uint8), "all")
    rate_map = RoiRegion.of(mask, (64, 64), (4, 4), 2.0, 5)(4.5)
    assert rate_map.highest_offset == 0.5
    base, quality = quality_map_levels(GrayImage(np.array([[0, 255]], np.uint8), "m"),
                                       (64, 128), (4, 8), 5)  # fmt: skip
    assert base == 0.0 and quality.highest_offset == 5.0


def test_rate_control_with_a_roi_meets_the_target(files, codec) -> None:
    x = read_image(files["image"])
    mask = read_gray(files["root"] / "mask.png", "ROI mask")
    grid = codec.latent_shape(120, 180)

    region = RoiRegion.of(mask, (120, 180), grid, 2.0, codec.max_index)

    low, high = (codec.encode(x, b, region(b)).bpp for b in (0.0, 3.0))
    target = (low + high) / 2
    result = encode_to_bpp(codec, x, target, region=region, max_encodes=4)
    assert abs(result.bpp / target - 1) <= 0.01
    assert result.stream.rate_map == region(result.lmbda_idx)
    budget = encode_to_size(codec, x, int(target * 120 * 180 / 8), region=region, max_encodes=4)
    assert budget.num_bytes <= int(target * 120 * 180 / 8)
    assert budget.stream.rate_map is not None


def test_targets_with_regions_are_checked_before_a_model_loads(files) -> None:
    mask = read_gray(files["root"] / "mask.png", "ROI mask")
    assert Target.parse(quality=1, roi=mask).roi_boost == 2.0
    assert Target.parse(quality_map=mask).kind == "quality_map"
    cases = {
        "--roi-boost needs --roi": {"quality": 1, "roi_boost": 3.0},
        "give it --quality": {"roi": mask},
        "not with --psnr": {"psnr": 30, "roi": mask},
        "give one rate option": {"quality": 1, "quality_map": mask},
        "refine": {"quality": 1, "roi": mask, "refine_steps": 2},
        "positive number": {"quality": 1, "roi": mask, "roi_boost": 0.0},
        "is empty": {"quality": 1, "roi": read_gray(files["root"] / "empty.png", "ROI mask")},
    }
    for message, options in cases.items():
        with pytest.raises(TargetError, match=message):
            Target.parse(**options)
    with pytest.raises(TargetError, match="is not an image"):
        read_gray(files["root"] / "text.png", "ROI mask")


def test_code_image_with_a_quality_map_and_on_a_fixed_rate_model(files, codec) -> None:
    x = read_image(files["image"])
    quality_map = read_gray(files["root"] / "map.png", "quality map")
    coded = code_image(codec, x, Target.parse(quality_map=quality_map))
    assert coded.stream.rate_map is not None and "quality map" in coded.note
    assert codec.decode(coded.stream).shape == x.shape
    fixed = ImageCodec.load(files["fixed"])
    with pytest.raises(RateError):
        code_image(fixed, x, Target.parse(quality_map=quality_map))


def _exit_code(argv: list[str]) -> int:
    """``main``'s exit code, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def test_the_command_line_codes_a_roi_and_refuses_bad_masks(files, tmp_path, capsys) -> None:
    root, model = files["root"], ["--checkpoint", str(files["vbr"])]
    out = tmp_path / "roi.lae"
    image = str(files["image"])
    assert main(["compress", image, str(out), "--quality", "1", "--roi", str(root / "mask.png"),
                 *model]) == 0  # fmt: skip
    assert read_bitstream(out).rate_map is not None
    assert main(["info", str(out)]) == 0
    assert "quality map" in capsys.readouterr().out
    assert main(["decompress", str(out), str(tmp_path / "roi.png"), *model]) == 0
    for options, message in (
        (["--quality", "1", "--roi", str(root / "empty.png")], "is empty"),
        (["--quality", "1", "--roi", str(root / "text.png")], "not an image"),
        (["--roi", str(root / "mask.png")], "give it --quality"),
        (["--quality", "1", "--roi", str(root)], "is a folder"),
    ):
        assert _exit_code(["compress", image, str(tmp_path / "x.lae"), *options, *model]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.lae").exists()


def test_a_folder_takes_one_mask_per_image_by_name(files, tmp_path, capsys) -> None:
    images, masks = tmp_path / "in", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("a", "b"):
        write_noisy_ramp(images / f"{name}.png", 64, 96, noise=10, seed=1)
    Image.open(files["root"] / "mask.png").save(masks / "a.png")
    model = ["--checkpoint", str(files["vbr"])]
    command = ["compress", str(images), str(tmp_path / "out"), "--quality", "1", "--roi",
               str(masks), *model]  # fmt: skip
    assert _exit_code(command) == 2 and "no ROI mask" in capsys.readouterr().err
    Image.open(files["root"] / "mask.png").save(masks / "b.webp", lossless=True)
    assert main(["compress", str(images), str(tmp_path / "out"), "--quality", "1",
                 "--roi", str(masks), *model]) == 0  # fmt: skip
    for name in ("a", "b"):
        assert read_bitstream(tmp_path / "out" / f"{name}.lae").rate_map is not None


# -- the study ----------------------------------------------------------------------------------
def test_the_roi_study_measures_both_masks_at_equal_size(files, codec, tmp_path) -> None:
    from lae_vbr.evaluation.inputs import load_test_images
    from lae_vbr.studies.roi import measure_roi, roi_masks, summarise_roi, write_roi

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "img.png").write_bytes(files["image"].read_bytes())
    images = load_test_images(folder)
    masks = roi_masks(images[0].pixels)
    assert set(masks) == {"box", "blob"} and all(0 < m.mean() < 0.5 for m in masks.values())
    assert all(np.array_equal(masks[k], roi_masks(images[0].pixels)[k]) for k in masks)
    rows = measure_roi(codec, images, [1.0, 3.0], boost=2.0)
    assert len(rows) == 2 * 2 * 2  # indices × masks × (uniform, roi)
    uniform = {(r["mask"], r["lmbda_idx"]): r["bytes"] for r in rows if r["coding"] == "uniform"}
    for r in rows:
        if r["coding"] == "roi":
            assert r["map_bytes"] > 0 and r["bytes"] <= uniform[r["mask"], r["lmbda_idx"]]
    summary = summarise_roi(rows)
    assert {g["mask"] for g in summary["groups"]} == {"box", "blob"}
    written = write_roi(summary, rows, tmp_path / "out", "test")
    assert "ROI ΔPSNR" in written["md"].read_text()
