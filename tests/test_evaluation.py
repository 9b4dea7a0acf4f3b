"""R-D evaluation: metric arithmetic, results files, BD-rate, classical codecs, the plain
measure → summarise → write functions, and the ``src/eval.py`` entry point end to end on Kodak
crops with tiny codecs."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from helpers import TINY_CFG, randomize_lae, tiny_cfg, tiny_tcm, tiny_vbr, write_small_image
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.evaluation import (
    BDSettings,
    EvalError,
    Measured,
    RDCurve,
    bd_rate,
    codecs_from_config,
    curve_from_points,
    image_metrics,
    load_test_images,
    measure_classical,
    measure_model,
    read_curve,
    summarise_rd,
    summarize,
    write_curve,
    write_rd,
)
from lae_vbr.evaluation.coding import operating_points
from lae_vbr.evaluation.metrics import msssim_db, psnr_from_mse_8bit
from lae_vbr.evaluation.results import resolve_anchors
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, LoadedCodec, save_codec_bundle
from lae_vbr.paths import REPO_ROOT

CROP = 176  # the smallest side MS-SSIM accepts


# -- metrics -------------------------------------------------------------------------------
def _offset_pair(offset: float, size: int = CROP) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.full((1, 3, size, size), 128.0)
    return ref, ref + offset  # MSE = offset²


def test_mean_psnr_and_psnr_of_mean_mse_differ_as_expected() -> None:
    rows = []
    for offset in (1.0, 10.0):  # MSE 1 and 100
        m = image_metrics(*_offset_pair(offset))
        assert m["mse"] == pytest.approx(offset**2)
        assert m["psnr"] == pytest.approx(psnr_from_mse_8bit(offset**2))
        rows.append({**m, "bpp": 1.0, "encoding_time": 0.1, "decoding_time": 0.2})
    avg = summarize(rows)
    per_image = [20 * math.log10(255 / 1), 20 * math.log10(255 / 10)]
    assert avg["psnr-rgb"] == pytest.approx(np.mean(per_image))  # 38.13 dB
    assert avg["psnr-rgb-mean-mse"] == pytest.approx(10 * math.log10(255**2 / 50.5))  # 31.10 dB
    assert avg["psnr-rgb"] - avg["psnr-rgb-mean-mse"] == pytest.approx(7.03, abs=0.01)


def test_ms_ssim_identity_db_scale_and_small_images() -> None:
    same = image_metrics(*_offset_pair(0.0))
    assert same["ms_ssim"] == pytest.approx(1.0) and same["psnr"] == math.inf
    assert msssim_db(0.99) == pytest.approx(20.0)
    noisy = torch.full((1, 3, CROP, CROP), 128.0)
    noisy += torch.randn(noisy.shape, generator=torch.Generator().manual_seed(0)) * 20
    assert 0 < image_metrics(torch.full_like(noisy, 128.0), noisy)["ms_ssim"] < 1
    assert math.isnan(image_metrics(*_offset_pair(1.0, size=64))["ms_ssim"])


def test_entropy_overhead_is_total_real_over_total_estimated_bits() -> None:
    rows = [
        {"bpp": b / 100, "bits": b, "bits_estimated": e, "bpp_estimated": e / 100}
        | {"mse": 1.0, "psnr": 48.0, "ms_ssim": 0.9, "encoding_time": 0, "decoding_time": 0}
        for b, e in ((101, 100), (303, 300))
    ]
    assert summarize(rows)["entropy-coding-overhead"] == pytest.approx(0.01)


# -- results files -------------------------------------------------------------------------
def test_compressai_results_round_trip(tmp_path: Path) -> None:
    points = [
        {"bpp": 0.8, "psnr-rgb": 36.0, "ms-ssim-rgb": 0.99, "lmbda_idx": 5.0},
        {"bpp": 0.2, "psnr-rgb": 30.0, "ms-ssim-rgb": math.nan, "lmbda_idx": 0.0},
    ]
    curve = curve_from_points("m", "test curve", points)
    path = write_curve(curve, tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert set(data) == {"name", "description", "results"}
    assert data["results"]["bpp"] == [0.2, 0.8]  # sorted by bpp, every list aligned
    assert data["results"]["lmbda_idx"] == [0.0, 5.0]
    assert data["results"]["ms-ssim-rgb"] == [None, 0.99]  # NaN is written as null
    back = read_curve(path)
    assert back.name == "m" and back.results["psnr-rgb"] == [30.0, 36.0]
    assert back.metric("ms-ssim-rgb-db")[1] == pytest.approx(20.0)
    assert math.isnan(back.metric("ms-ssim-rgb-db")[0])
    (tmp_path / "bad.json").write_text('{"results": {"bpp": [1, 2], "psnr-rgb": [30]}}')
    with pytest.raises(EvalError, match="different lengths"):
        read_curve(tmp_path / "bad.json")


def test_anchors_resolve_by_name_and_reject_unknown(shared: Path) -> None:
    anchors_dir = shared / "anchors" / "kodak"
    vtm, tcm = resolve_anchors(["vtm", "tcm-small-paper"], anchors_dir)
    assert vtm.name == "VTM" and len(vtm.metric("ms-ssim-rgb-db")) == len(vtm.results["bpp"])
    assert tcm.metric("ms-ssim-rgb-db") is None  # the paper curve has PSNR only
    with pytest.raises(EvalError, match=r"unknown anchor 'nope'.*available: .*vtm"):
        resolve_anchors(["nope"], anchors_dir)


# -- BD-rate --------------------------------------------------------------------------------
def _curve(name: str, bpp: list[float], psnr: list[float]) -> RDCurve:
    return RDCurve(name, "", {"bpp": bpp, "psnr-rgb": psnr})


@pytest.mark.parametrize("method", ["akima", "pchip"])
def test_bd_rate_of_a_rate_scaled_curve(method: str) -> None:
    anchor = _curve("a", [0.1, 0.2, 0.4, 0.8, 1.2], [28.0, 31.0, 34.0, 37.0, 38.5])
    test = _curve("t", [0.9 * r for r in anchor.results["bpp"]], anchor.results["psnr-rgb"])
    result = bd_rate(anchor, test, "psnr-rgb", method)
    assert result.bd_rate == pytest.approx(-10.0, abs=1e-6)
    assert result.overlap == pytest.approx(1.0) and result.method == method
    assert bd_rate(test, anchor, "psnr-rgb", method).bd_rate == pytest.approx(100 / 0.9 - 100)


def test_bd_rate_reports_unusable_pairs() -> None:
    anchor = _curve("a", [0.1, 0.2, 0.4], [28.0, 31.0, 34.0])
    far = _curve("t", [1.0, 2.0], [40.0, 42.0])
    assert bd_rate(anchor, far).bd_rate is None
    assert "do not overlap" in bd_rate(anchor, far).note
    assert "at least 2" in bd_rate(anchor, _curve("one", [0.3], [33.0])).note
    assert "no ms-ssim-rgb-db" in bd_rate(anchor, anchor, "ms-ssim-rgb-db").note


# -- classical codecs ----------------------------------------------------------------------
def _kodak_crop(shared: Path, name: str = "kodim23", size: int = CROP) -> np.ndarray:
    with Image.open(shared / "data" / "kodak" / f"{name}.png") as img:
        return np.asarray(img.convert("RGB"))[100 : 100 + size, 200 : 200 + size].copy()


def test_classical_sweep_rate_and_quality_grow_with_quality(shared: Path) -> None:
    image = _kodak_crop(shared, size=96)
    qualities = [10, 40, 70, 95]
    specs = {
        "jpeg": {"name": "JPEG", "format": "jpeg", "qualities": qualities},
        "webp": {"name": "WebP", "format": "WEBP", "qualities": qualities},
        "avif": {"name": "AVIF", "format": "AVIF", "qualities": qualities, "options": {"speed": 8}},
    }
    ref = torch.tensor(image).permute(2, 0, 1)[None].float()
    for codec in codecs_from_config(specs):
        sizes, psnrs = [], []
        for q in qualities:
            decoded, nbytes, enc_t, dec_t = codec.roundtrip(image, q)
            assert decoded.shape == image.shape and decoded.dtype == np.uint8
            assert enc_t > 0 and dec_t > 0
            sizes.append(nbytes)
            psnrs.append(image_metrics(ref, torch.tensor(decoded).permute(2, 0, 1)[None].float()))
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), (codec.name, sizes)
        assert psnrs[-1]["psnr"] > psnrs[0]["psnr"] + 5, codec.name
        assert "via Pillow" in codec.description()
    with pytest.raises(EvalError, match="cannot write"):
        codecs_from_config({"x": {"format": "NOPE", "qualities": [1]}})


# -- measure → summarise → write, without Hydra ----------------------------------------------
def test_rd_as_plain_functions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_vbr()
    randomize_lae(model.modnet_ga, 0.5, seed=1)
    codec = ImageCodec(LoadedCodec(model, list(PAPER_MSE_LMBDAS), "tiny"))
    images = load_test_images(write_small_image(tmp_path / "images"))
    points = operating_points(codec.loaded, [0, 5], 0.5)
    rows = measure_model(codec, images, points, warmup=False)
    assert [(r["lmbda_idx"], r["lmbda"]) for r in rows] == [(0.0, 0.0025), (5.0, 0.05)]
    (jpeg,) = codecs_from_config({"jpeg": {"name": "JPEG", "format": "JPEG", "qualities": [30]}})
    measured = [Measured("tiny", "in memory", "model", rows), measure_classical(jpeg, images)]

    anchor = curve_from_points(
        "anchor", "", [{"bpp": 0.1, "psnr-rgb": 5.0}, {"bpp": 9, "psnr-rgb": 60}]
    )
    report = summarise_rd(measured, [anchor], BDSettings(metrics=("psnr-rgb",)))
    assert [c.name for c in report.curves] == ["tiny", "JPEG"]
    assert [(r.test, r.anchor) for r in report.bd_rates] == [
        ("tiny", "anchor"),
        ("JPEG", "anchor"),
        ("tiny", "JPEG"),  # the model against the classical codec measured in the same run
    ]
    assert [r["codec"] for r in report.rows] == ["tiny", "tiny", "JPEG"]
    files = write_rd(report, tmp_path / "out", title="plain")
    assert {p.relative_to(tmp_path / "out").as_posix() for p in files.values()} == {
        "results/tiny.json", "results/jpeg.json", "per_image.csv", "per_image.json", "rd.png",
        "bd_rate.md", "bd_rate.json",
    }  # fmt: skip
    assert read_curve(files["tiny"]).results["lmbda_idx"] == [0.0, 5.0]
    with pytest.raises(EvalError, match=r"unknown bd_rate\.method 'nope'"):
        BDSettings.from_config({"method": "nope"})


# -- the entry point -----------------------------------------------------------------------
def _entry_point():
    spec = importlib.util.spec_from_file_location("lae_eval_entry", REPO_ROOT / "src/eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _compose(overrides: list[str]):
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3", job_name="eval"):
        return compose("eval", overrides=overrides)


@pytest.fixture
def crops(shared: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_kodak_crop(shared)).save(folder / "kodim23_crop.png")
    return folder


def _base_overrides(shared: Path, images: Path, out: Path) -> list[str]:
    return [
        "num_threads=1",  # small tensors: one thread is as fast, and far faster on a busy CPU
        f"test_dir={images}",
        f"paths.output_dir={out}",
        f"paths.anchors_dir={shared / 'anchors' / 'kodak'}",
    ]


def test_eval_variable_rate_end_to_end(shared: Path, crops: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_vbr()
    randomize_lae(model.modnet_ga, 0.5, seed=1)  # λ must change the rate
    ckpt = save_codec_bundle(tmp_path / "vbr.pt", model, TINY_CFG)
    out = tmp_path / "run"
    cfg = _compose(
        [
            *_base_overrides(shared, crops, out),
            f"checkpoint={ckpt}",
            "name=tiny-vbr",
            "lmbda_grid=[0,5]",
            "classical=[jpeg]",
            "classical.jpeg.qualities=[30,80]",
            "anchors=[vtm,tcm-small-paper]",
            "logger=csv",
        ]
    )
    _entry_point()(cfg)

    curve = json.loads((out / "results" / "tiny-vbr.json").read_text())
    r = curve["results"]
    assert curve["name"] == "tiny-vbr" and sorted(r["lmbda_idx"]) == [0.0, 5.0]
    assert curve["meta"]["model.name"] == "tcm-lae-vbr"  # the label is the user's, meta says what
    assert curve["meta"]["paths.model_checkpoint"] == "vbr.pt"
    assert r["lmbda"][r["lmbda_idx"].index(5.0)] == 0.05
    assert r["bpp"] == sorted(r["bpp"]) and r["bpp"][0] != r["bpp"][1]
    for key in ("bpp", "bpp-estimated", "encoding_time", "decoding_time"):
        assert all(v > 0 for v in r[key]), key
    # the file adds a header and a checksum (tens of bytes) to the entropy-coded strings
    header_bytes = [(f - b) * CROP**2 / 8 for f, b in zip(r["bpp-file"], r["bpp"], strict=True)]
    assert all(0 < n < 100 for n in header_bytes), header_bytes
    for key in ("psnr-rgb", "psnr-rgb-mean-mse", "ms-ssim-rgb-db"):
        assert all(0 < v < 60 for v in r[key]), key
    assert r["psnr-rgb"] == pytest.approx(r["psnr-rgb-mean-mse"])  # one image: the same
    assert all(0 < v < 1 for v in r["ms-ssim-rgb"])
    assert all(abs(v) < 1 for v in r["entropy-coding-overhead"])

    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["codec"] for row in rows] == ["tiny-vbr"] * 2 + ["JPEG (Pillow)"] * 2
    first = rows[0]
    assert int(first["bits"]) % 8 == 0
    assert float(first["bpp"]) == pytest.approx(int(first["bits"]) / CROP**2)
    jpeg_file = json.loads((out / "results" / "jpeg.json").read_text())
    jpeg = jpeg_file["results"]
    assert jpeg["quality"] == [30, 80] and jpeg["bpp"][0] < jpeg["bpp"][1]
    assert jpeg_file["meta"]["model.source"] == "classical"
    assert jpeg_file["meta"]["dataset"] == crops.name
    for written in out.rglob("*.json"):
        assert str(tmp_path) not in written.read_text(), written

    bd = json.loads((out / "bd_rate.json").read_text())
    assert bd["method"] == "akima" and bd["package"].startswith("bjontegaard")
    pairs = {(x["test"], x["anchor"], x["metric"]) for x in bd["results"]}
    assert ("tiny-vbr", "VTM", "psnr-rgb") in pairs
    assert ("JPEG (Pillow)", "VTM", "psnr-rgb") in pairs
    assert "akima" in (out / "bd_rate.md").read_text()
    with Image.open(out / "rd.png") as png:
        assert png.size[0] > 800
    logged = (out / "csv" / "metrics.csv").read_text()
    assert "eval/bpp" in logged and "eval/psnr-rgb" in logged


def test_eval_merges_fixed_rate_checkpoints(shared: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"  # below MS-SSIM's minimum size: cheaper, and MS-SSIM is null
    small.mkdir()
    Image.fromarray(_kodak_crop(shared, size=64)).save(small / "kodim23_64.png")
    ckpts = []
    for seed, lmbda in ((1, 0.0035), (2, 0.013)):
        torch.manual_seed(seed)
        cfg = tiny_cfg(lae={"enabled": False})
        cfg["lmbda"]["values"] = [lmbda]
        ckpts.append(save_codec_bundle(tmp_path / f"fixed{seed}.pt", tiny_tcm(), cfg))
    earlier = [{"bpp": 0.5, "psnr-rgb": 8.0}, {"bpp": 5.0, "psnr-rgb": 9.0}]
    extra = write_curve(curve_from_points("earlier-run", "", earlier), tmp_path / "earlier.json")
    out = tmp_path / "run"
    cfg = _compose(
        [
            *_base_overrides(shared, small, out),
            f"checkpoint=[{ckpts[0]},{ckpts[1]}]",
            "warmup=false",
            "name=tiny-fixed",
            "classical=[]",
            "anchors=[]",
            f"extra_anchors=[{extra}]",
            "progress=false",
            "logger=wandb",  # offline: written under the run folder, nothing sent
        ]
    )
    _entry_point()(cfg)
    r = json.loads((out / "results" / "tiny-fixed.json").read_text())["results"]
    assert len(r["bpp"]) == 2 and r["bpp"] == sorted(r["bpp"])
    assert sorted(r["lmbda"]) == [0.0035, 0.013] and r["lmbda_idx"] == [None, None]
    assert r["ms-ssim-rgb"] == [None, None] and all(20 > p > 0 for p in r["psnr-rgb"])
    bd = json.loads((out / "bd_rate.json").read_text())["results"]
    assert {(x["test"], x["anchor"]) for x in bd} == {("tiny-fixed", "earlier-run")}
    assert not (out / "results" / "jpeg.json").exists()
    media = next((out / "wandb").glob("offline-run-*")) / "files" / "media"
    assert list(media.glob("table/eval/bd_rate*.table.json"))
    assert list(media.glob("images/eval/rd_plot*.png"))


def test_eval_bad_input_is_one_line_error(
    shared: Path, crops: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = save_codec_bundle(tmp_path / "vbr.pt", tiny_vbr(), TINY_CFG)
    empty = tmp_path / "empty"
    empty.mkdir()
    main = _entry_point()
    cases = [
        ([f"test_dir={empty}"], "no usable image"),
        (["anchors=[vtm,not-an-anchor]"], "unknown anchor 'not-an-anchor'"),
        (["lmbda_grid=[0,7]"], "outside the trained range"),
    ]
    for extra, message in cases:
        base = [*_base_overrides(shared, crops, tmp_path / "run"), f"checkpoint={ckpt}"]
        cfg = _compose([*base, "classical=[]", *extra])
        caplog.clear()
        with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
            main(cfg)
        assert exit_info.value.code == 1
        assert message in caplog.text


def test_eval_cli_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    proc = subprocess.run(
        [
            sys.executable,
            REPO_ROOT / "src/eval.py",
            f"checkpoint={missing}",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,  # Hydra's job log file lands in the working directory
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert f"checkpoint not found: {missing}" in output
    assert "Traceback" not in output
