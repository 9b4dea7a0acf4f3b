"""The R-λ, rate-control and DLM studies through ``src/eval.py`` and as plain functions, and the
latent toy experiment through the training entry point, end to end with tiny models on Kodak
crops (a small synthetic image for the plain functions)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from helpers import tiny_cfg, tiny_tcm, write_noisy_ramp
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.refine import RefineSchedule
from lae_vbr.config import register_resolvers
from lae_vbr.evaluation import InputImage, load_test_images
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, LoadedCodec, save_codec_bundle
from lae_vbr.paths import REPO_ROOT
from lae_vbr.studies.common import StudyError
from lae_vbr.studies.dlambda import measure_dlambda, summarise_dlambda, write_dlambda
from lae_vbr.studies.dlm import coding_points, measure_dlm, summarise_dlm, write_dlm
from lae_vbr.studies.latent_toy import LatentToyModule
from lae_vbr.studies.ratecontrol import (
    METHODS,
    StudyPlan,
    measure_ratecontrol,
    rate_control_methods,
    summarise_ratecontrol,
    write_ratecontrol,
)
from lae_vbr.studies.rlambda import measure_rlambda, summarise_rlambda, write_rlambda
from lae_vbr.training import ConfigError, train
from test_rate_control import scaling_vbr

SIZE = 128
CONF = REPO_ROOT / "conf"
TINY_TRAIN = [
    "trainer=cpu",
    "logger=none",
    "callbacks=none",
    "data=sample",
    "data.crop_size=128",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.max_val_images=1",
    "+trainer.num_sanity_val_steps=0",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]

register_resolvers()


def make_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The training config as ``src/train.py`` composes it, outputs under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = cfg.paths.log_dir = str(tmp_path)
    return cfg


@pytest.fixture(scope="module")
def crops(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crops")
    for name in ("kodim05", "kodim23"):
        with Image.open(shared / "data" / "kodak" / f"{name}.png") as img:
            pixels = np.asarray(img.convert("RGB"))[100 : 100 + SIZE, 200 : 200 + SIZE]
        Image.fromarray(pixels.copy()).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def vbr_model() -> torch.nn.Module:
    return scaling_vbr(tiny_cfg())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, vbr_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_cfg()
    fixed_cfg = tiny_cfg(lae={"enabled": False})
    fixed = {}
    for seed, lmbda in ((1, 0.05), (2, 0.0035)):
        torch.manual_seed(seed)
        fixed_cfg["lmbda"]["values"] = [lmbda]
        fixed[lmbda] = save_codec_bundle(root / f"fixed_{lmbda}.pt", tiny_tcm(), fixed_cfg)
    return {
        "vbr": save_codec_bundle(root / "vbr.pt", vbr_model, cfg),
        "high": fixed[0.05],
        "low": fixed[0.0035],
    }


def _run_study(overrides: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("lae_eval_entry", REPO_ROOT / "src/eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3", job_name="eval"):
        cfg = compose("eval", overrides=["num_threads=1", "progress=false", *overrides])
    module.main(cfg)


def test_rlambda_study(checkpoints, crops, tmp_path) -> None:
    _run_study(
        [
            "study=rlambda",
            f"checkpoint={checkpoints['vbr']}",
            f"test_dir={crops}",
            "study.lmbda_grid=[0,1,2.5,4,5]",
            f"paths.output_dir={tmp_path}",
        ]
    )
    text = (tmp_path / "rlambda.json").read_text()
    data = json.loads(text)
    assert len(data["rows"]) == 2 * 5
    # the record says which model on which images, without the paths of this machine
    meta = data["meta"]
    assert (meta["model.name"], meta["model.metric"], meta["model.source"]) == (
        "tcm-lae-vbr", "mse", "checkpoint"
    )  # fmt: skip
    assert meta["paths.model_checkpoint"] == checkpoints["vbr"].name
    assert (meta["dataset"], meta["dataset.num_images"]) == (crops.name, 2)
    assert str(crops) not in text and str(checkpoints["vbr"].parent) not in text
    assert f"{checkpoints['vbr'].name} (" in data["description"]
    for row in data["rows"]:
        assert 0 < row["bits_streams"] < row["bits_file"] < row["bits_streams"] + 8 * 100
    fits = {(f["image"], f["rate"], f["slope_mode"]): f for f in data["fits"]}
    for (_, rate, mode), fit in fits.items():
        if mode == "fixed":
            assert fit["slope"] == 1.0
            free = fits[(fit["image"], rate, "free")]
            assert free["r2"] >= fit["r2"] - 1e-9  # a free slope fits at least as well
    # the fitted C reproduces the mean residual: mean error of the slope-1 fit is centred
    row_bits = [
        r["bits_file"] - r["log2_mask_sum"] for r in data["rows"] if r["image"] == "kodim05.png"
    ]
    c_bpp = fits[("kodim05.png", "file", "fixed")]["C_bpp"]
    assert c_bpp == pytest.approx(np.mean(row_bits) / SIZE**2)
    assert {s["rate"] for s in data["summary"]} == {"file", "streams"}
    assert "R² mean" in (tmp_path / "rlambda.md").read_text()
    assert (tmp_path / "rlambda.png").stat().st_size > 10_000


def test_ratecontrol_study(checkpoints, crops, tmp_path) -> None:
    _run_study(
        [
            "study=ratecontrol",
            f"checkpoint={checkpoints['vbr']}",
            f"test_dir={crops}",
            "max_images=2",
            "study.target_fractions=[0.3,0.7]",
            f"study.methods=[{','.join(METHODS)}]",
            "study.psnr_methods=[interpolate,secant,bisection]",
            "study.psnr_fractions=[0.5]",
            "study.total_size_fractions=[0.5]",
            f"study.calibration.dir={crops}",
            "study.calibration.lmbda_step=2.5",
            "study.bisection.max_encodes=4",
            f"paths.output_dir={tmp_path}",
        ]
    )
    data = json.loads((tmp_path / "ratecontrol.json").read_text())
    bpp = {s["method"]: s for s in data["summary"] if s["kind"] == "bpp"}
    assert tuple(bpp) == METHODS  # every method, in table order
    assert bpp["estimate"]["encodes_max"] <= 2 and bpp["rlambda"]["encodes_max"] <= 2
    assert bpp["rlambda_3"]["encodes_max"] <= 3 and bpp["estimate"]["estimates_mean"] >= 1
    assert bpp["global"]["encodes_max"] == 1 and bpp["bisection"]["encodes_max"] <= 4
    kinds = [(s["kind"], s["method"]) for s in data["summary"] if s["kind"] != "bpp"]
    assert kinds == [
        ("size", "estimate"), ("size", "rlambda"), ("psnr", "interpolate"), ("psnr", "secant"),
        ("psnr", "bisection"), ("total_size", "estimate"),
    ]  # fmt: skip
    for row in data["rows"]:
        if row["kind"] == "bpp":
            low, high = row["image_range"]
            assert row["in_range"] and low <= row["target"] <= high
            assert row["error"] == pytest.approx(row["achieved"] / row["target"] - 1)
        if row["kind"] in ("size", "total_size"):
            assert row["fits"] and row["achieved"] <= row["target"]
        if row["kind"] == "psnr" and row["method"] != "bisection":
            assert row["rounds"] <= 3 and row["encodes"] == 1
    sets = [r for r in data["rows"] if r["kind"] == "total_size"]
    assert len(sets) == 1 and len(sets[0]["per_image"]) == 2
    assert data["calibration"]["lmbda_idx"] == [0.0, 2.5, 5.0]
    text = (tmp_path / "ratecontrol.md").read_text()
    assert "real encodes" in text and "### psnr" in text and "CPU time / plain encode" in text


def test_dlambda_study(checkpoints, crops, tmp_path) -> None:
    _run_study(
        [
            "study=dlambda",
            f"checkpoint={checkpoints['vbr']}",
            f"test_dir={crops}",
            "max_images=1",
            "study.lmbda_step=2.5",
            f"paths.output_dir={tmp_path}",
        ]
    )
    data = json.loads((tmp_path / "dlambda.json").read_text())
    assert [a["axis"] for a in data["summary"]["axes"]] == ["mask", "rate", "log_rate"]
    assert [r["lmbda_idx"] for r in data["rows"]] == [0.0, 2.5, 5.0]
    assert data["summary"]["reconstruction_vs_decode_max_db"] < 1e-3
    assert "two-round error" in (tmp_path / "dlambda.md").read_text()


def test_dlm_study(checkpoints, crops, tmp_path) -> None:
    _run_study(
        [
            "study=dlm",
            f"checkpoint={checkpoints['vbr']}",
            f"test_dir={crops}",
            "max_images=1",
            "study.lmbda_grid=[0,2.5,5]",
            "study.steps=2",
            f"paths.output_dir={tmp_path}",
        ]
    )
    data = json.loads((tmp_path / "dlm.json").read_text())
    assert set(data["bd_rate"]) == {"psnr-rgb", "ms-ssim-rgb-db"}
    refined = [r for r in data["rows"] if r["variant"] == "refined"]
    assert len(refined) == 3 and all(r["loss_refined"] <= r["loss_plain"] for r in refined)
    assert all(r["steps_run"] <= 2 for r in refined)
    curves = data["curves"]
    assert curves["plain"]["results"]["lmbda_idx"] != [] and "refined" in curves
    assert "BD-rate of refined vs plain" in (tmp_path / "dlm.md").read_text()


@pytest.mark.parametrize(
    ("study", "extra", "message"),
    [
        ("rlambda", ["checkpoint={high}"], "needs a variable-rate model"),
        ("ratecontrol", ["checkpoint={vbr}", "study.targets=[-1]"], "positive number of bpp"),
        ("ratecontrol", ["checkpoint={vbr}", "study.methods=[estimate,x]"], "unknown rate-control"),
        ("ratecontrol", ["checkpoint={vbr}", "study.kinds=[bpp,x]"], "unknown rate-control kinds"),
        ("dlm", ["checkpoint={vbr}", "study.lmbda_grid=[0,9]"], "outside the trained range"),
        ("dlm", [], "set checkpoint=PATH"),
        ("dlm", ["checkpoint={vbr}", "study.steps=-2"], "steps must be ≥ 0"),
        ("dlm", ["checkpoint={vbr}", "study.schedule=magic"], "study.schedule must be one of"),
    ],
)
def test_study_bad_input_is_one_line_error(
    checkpoints, crops, tmp_path, caplog, study, extra, message
) -> None:
    overrides = [f"study={study}", f"test_dir={crops}", f"paths.output_dir={tmp_path}"]
    overrides += [e.format(**checkpoints) for e in extra]
    if study == "ratecontrol":
        overrides.append(f"study.calibration.dir={crops}")
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        _run_study(overrides)
    assert exit_info.value.code == 1
    assert message in caplog.text and "Traceback" not in caplog.text


# -- the studies as plain functions, without Hydra --------------------------------------------
@pytest.fixture(scope="module")
def vbr_codec(vbr_model, checkpoints) -> ImageCodec:
    """The model of ``checkpoints["vbr"]`` (saved first), without loading it again."""
    return ImageCodec(LoadedCodec(vbr_model, list(PAPER_MSE_LMBDAS), "tiny"))


@pytest.fixture(scope="module")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> list[InputImage]:
    folder = tmp_path_factory.mktemp("small")
    write_noisy_ramp(folder / "ramp.png", 64, 64, noise=25, seed=0)
    return load_test_images(folder)


def test_rlambda_as_plain_functions(vbr_codec, small_images, tmp_path) -> None:
    rows = measure_rlambda(vbr_codec, small_images, [0.0, 5.0])
    assert [r["lmbda_idx"] for r in rows] == [0.0, 5.0] and rows[0]["pixels"] == 64 * 64
    summary = summarise_rlambda(rows)
    assert len(summary.fits) == 4  # one image × two rates × two slope modes
    assert [(s["rate"], s["slope_mode"], s["images"]) for s in summary.by_rate] == [
        ("file", "fixed", 1), ("file", "free", 1), ("streams", "fixed", 1), ("streams", "free", 1)
    ]  # fmt: skip
    files = write_rlambda(summary, rows, tmp_path, "tiny model", plot_images=1)
    assert {p.name for p in files.values()} == {"rlambda.json", "rlambda.md", "rlambda.png"}
    data = json.loads(files["json"].read_text())
    assert list(data) == ["description", "meta", "summary", "fits", "rows"]
    assert data["description"] == "tiny model" and data["rows"] == rows
    assert {"git.commit", "command", "date", "lae_vbr.version"} <= set(data["meta"])


def test_ratecontrol_as_plain_functions(vbr_codec, small_images, tmp_path) -> None:
    methods = rate_control_methods(["estimate", "bisection"], max_encodes=2)
    rows = measure_ratecontrol(vbr_codec, small_images, methods, fractions=[0.5])
    assert [r["method"] for r in rows] == ["estimate", "bisection"]
    low, high = rows[0]["image_range"]
    assert rows[0]["target"] == pytest.approx((low + high) / 2) and rows[0]["in_range"]
    assert rows[0]["time_ratio"] == pytest.approx(
        rows[0]["cpu_seconds"] / rows[0]["plain_cpu_seconds"]
    )
    summary = summarise_ratecontrol(rows)
    assert [s["method"] for s in summary] == ["estimate", "bisection"]
    assert summary[0]["encodes_max"] <= 2 and summary[1]["encodes_max"] <= 2
    files = write_ratecontrol(summary, rows, tmp_path)
    data = json.loads(files["json"].read_text())
    assert list(data) == ["description", "meta", "summary", "rows"]
    with pytest.raises(StudyError, match="need a calibration"):
        rate_control_methods(["estimate", "global"])
    plan = StudyPlan(kinds=["psnr"], psnr_methods=["interpolate"], psnr_fractions=[0.5])
    rows = measure_ratecontrol(vbr_codec, small_images, {}, plan=plan)
    assert [(r["kind"], r["method"]) for r in rows] == [("psnr", "interpolate")]
    assert abs(rows[0]["error"]) <= 0.1 and rows[0]["rounds"] <= 3


def test_ratecontrol_plan_passes_the_psnr_rounds(monkeypatch) -> None:
    """study.psnr_rounds reaches encode_to_psnr; unset, its own default applies."""
    calls: list[dict] = []
    monkeypatch.setattr(
        "lae_vbr.studies.ratecontrol.encode_to_psnr", lambda *a, **kw: calls.append(kw)
    )
    for rounds in (None, 3):
        StudyPlan(kinds=["psnr"], psnr_rounds=rounds).psnr_method("interpolate")(None, None, 30.0)
    assert calls == [
        {"method": "interpolate", "slope": None},
        {"method": "interpolate", "slope": None, "rounds": 3},
    ]


def test_dlambda_as_plain_functions(vbr_codec, small_images, tmp_path) -> None:
    rows = measure_dlambda(vbr_codec, small_images, [0.0, 1.0, 2.5, 4.0, 5.0])
    summary = summarise_dlambda(rows)
    assert len(summary["fits"]) == 3 and all(0 <= f["r2"] <= 1 for f in summary["fits"])
    assert summary["axes"][0]["two_round_error_max_db"] >= 0
    files = write_dlambda(summary, rows, tmp_path, "tiny model")
    assert json.loads(files["json"].read_text())["description"] == "tiny model"


def test_dlm_schedules_by_name_with_overrides() -> None:
    from omegaconf import OmegaConf

    from lae_vbr.studies.dlm import _schedule

    def study(**kw: object) -> RefineSchedule:
        return _schedule(OmegaConf.create({"schedule": "fast", "steps": None, **kw}))

    assert study() == RefineSchedule()
    assert study(schedule="reference") == RefineSchedule.reference()
    assert study(schedule="reference", steps=5, lr=400) == RefineSchedule(
        5, 400.0, 0.99, 0.0, None, 0.5, 1e-5, "float32", False
    )
    assert study(precision="float32").precision == "float32"
    assert study(midpoint_on_rise=False).midpoint_on_rise is False
    assert study(momentum=0).momentum == 0.0 and study(steps=3).steps == 3


def test_dlm_as_plain_functions(vbr_codec, small_images, tmp_path) -> None:
    assert coding_points(vbr_codec, [5, 0]) == [0.0, 5.0]
    rows = measure_dlm(vbr_codec, small_images, [5.0], RefineSchedule(steps=1))
    assert [(r["variant"], r["lmbda_idx"]) for r in rows] == [("plain", 5.0), ("refined", 5.0)]
    assert rows[1]["steps_run"] <= 1 and rows[1]["loss_refined"] <= rows[1]["loss_plain"]
    summary = summarise_dlm(rows, "tiny")
    assert summary.curves["refined"].name == "tiny (refined)"
    assert [p["lmbda_idx"] for p in summary.points["plain"]] == [5.0]
    assert "at least 2 points" in summary.bd_rate["psnr-rgb"].note  # one point: no BD-rate
    files = write_dlm(summary, rows, tmp_path)
    assert {p.name for p in files.values()} == {"dlm.json", "dlm.md", "dlm.png"}
    assert list(json.loads(files["json"].read_text())) == [
        "description",
        "meta",
        "bd_rate",
        "curves",
        "rows",
    ]


# -- the latent toy experiment -----------------------------------------------------------------
def _toy_cfg(tmp_path: Path, checkpoints: dict[str, Path], high: str, low: str, *extra: str):
    return make_cfg(
        tmp_path,
        [
            "experiment=latent_toy",
            *TINY_TRAIN,
            f"high_ckpt={checkpoints[high]}",
            f"low_ckpt={checkpoints[low]}",
            *extra,
        ],
    )


def test_latent_toy_trains_end_to_end(checkpoints, tmp_path) -> None:
    cfg = _toy_cfg(
        tmp_path,
        checkpoints,
        "high",
        "low",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "trainer.check_val_every_n_epoch=1",
        "validate_after_fit=false",
    )
    metrics = train(cfg)
    for key in (
        "latent_psnr_low",
        "latent_psnr_high",
        "chain_bpp",
        "chain_psnr",
        "high_bpp",
        "high_psnr",
        "low_bpp",
        "low_psnr",
        "loss",
    ):
        assert np.isfinite(metrics[f"val/{key}"]), key
    assert metrics["train/loss_epoch"] > 0
    assert metrics["val/high_bpp"] > 0 and metrics["val/chain_bpp"] > 0


def test_latent_toy_identity_mapping_reproduces_the_high_rate_model(checkpoints, tmp_path):
    cfg = _toy_cfg(tmp_path, checkpoints, "high", "high", "latent_toy.contextual=true")
    module = LatentToyModule(cfg).eval()
    x = torch.rand(1, 3, 96, 80)
    out = module.measure(x)  # untrained mappers are the identity, both models are the same
    assert out["chain_bpp"] == pytest.approx(float(out["high_bpp"]), rel=1e-5)
    assert out["chain_psnr"] == pytest.approx(float(out["high_psnr"]), rel=1e-5)
    assert out["latent_psnr_low"] > 100 and out["loss"] == 0


def test_latent_toy_rejects_missing_or_variable_rate_checkpoints(checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="needs two fixed-rate checkpoints"):
        LatentToyModule(make_cfg(tmp_path, ["experiment=latent_toy", *TINY_TRAIN]))
    with pytest.raises(ConfigError, match="needs a fixed-rate TCM checkpoint"):
        LatentToyModule(_toy_cfg(tmp_path, checkpoints, "vbr", "low"))
