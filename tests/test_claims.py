"""The claims study's pipeline end to end at a toy budget (``experiments/claims/run.py --toy``):
every run trained through the framework's sweeps, every arm evaluated, every results file under
its expected name, into a temporary folder (never over the committed records). Structure and
names only: 4 steps say nothing about the methods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import require_shared

REPO = Path(__file__).resolve().parents[1]
CURVES = ("fixed", "lae", "lae_no_context", "lae_encoder_only", "gain", "lae_dlm", "fixed_dlm",
          "lae_seed2", "fixed_seed2")  # fmt: skip
VS_FIXED = ("lae", "lae_no_context", "lae_encoder_only", "gain", "lae_dlm", "lae_seed2",
            "fixed_seed2")  # fmt: skip
LAE_MODELS = ("lae", "lae_no_context", "lae_encoder_only", "lae_seed2")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy study's results folder (trained and evaluated once for the module)."""
    kodak = require_shared("data/kodak") / "data" / "kodak"
    tmp = tmp_path_factory.mktemp("claims")
    data = tmp / "two"
    data.mkdir()
    for name in ("kodim01", "kodim02"):  # two small images, MS-SSIM's smallest side and more
        Image.open(kodak / f"{name}.png").convert("RGB").crop((96, 96, 288, 272)).save(
            data / f"{name}.png"
        )
    results = tmp / "results"
    command = [sys.executable, str(REPO / "experiments" / "claims" / "run.py"), str(tmp / "runs"),
               "--toy", "--jobs", "2", "--data", str(data), "--results", str(results)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return results


@pytest.mark.parametrize("folder", ["results", "results_photos_val"])
@pytest.mark.parametrize("budget", ["", "half"])
def test_every_file_under_its_name(toy: Path, folder: str, budget: str) -> None:
    out = toy / folder / budget
    for name in CURVES:
        curve = json.loads((out / f"{name}.json").read_text())
        assert curve["name"] == name
        assert {"bpp", "psnr-rgb", "ms-ssim-rgb-db"} <= set(curve["results"])
    points = {name: len(json.loads((out / f"{name}.json").read_text())["results"]["bpp"])
              for name in CURVES}  # fmt: skip
    assert points["fixed"] == points["fixed_seed2"] == points["fixed_dlm"] == 6
    assert all(points[name] == 6 for name in ("lae", "gain", "lae_dlm"))
    table = json.loads((out / "bd_rate.json").read_text())
    pairs = {(r["test"], r["anchor"], r["metric"]) for r in table["results"]}
    for metric in ("psnr-rgb", "ms-ssim-rgb-db"):
        assert {(name, "fixed", metric) for name in VS_FIXED} <= pairs
        assert {("lae_dlm", "fixed_dlm", metric), ("lae", "gain", metric)} <= pairs
    rlambda = json.loads((out / "rlambda.json").read_text())["models"]
    control = json.loads((out / "rate_control.json").read_text())["models"]
    assert set(rlambda) == set(control) == set(LAE_MODELS)
    assert {"slope_free_mean", "r2_free_mean", "mean_abs_err_bpp_slope1"} <= set(rlambda["lae"])
    assert (out / "rd.png").stat().st_size > 0


def test_the_rate_axis_can_be_left_out(toy: Path, tmp_path: Path) -> None:
    """``study.rate_axis=false``: the curves and BD-rates, no R-λ fit or rate control."""
    out = tmp_path / "curves_only"
    command = [sys.executable, str(REPO / "src" / "eval.py"), "study=claims",
               f"study.root={toy.parent / 'runs'}", "study.step=4", "study.rate_axis=false",
               f"study.out={out}", f"test_dir={toy.parent / 'two'}", "max_images=1",
               "study.refine_steps=1", "num_threads=1", "progress=false",
               f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((out / "lae.json").read_text())["name"] == "lae"
    assert json.loads((out / "bd_rate.json").read_text())["results"]
    assert json.loads((out / "rlambda.json").read_text())["models"] == {}
    assert json.loads((out / "rate_control.json").read_text())["models"] == {}
