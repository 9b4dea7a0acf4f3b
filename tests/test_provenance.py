"""What results files say about where they came from: CompressAI's ``<arch>-<metric>`` names,
the ``meta`` block (model, test set, version, commit, command, date) and paths that name
nothing of the machine that wrote them; older files without ``meta`` still read."""

from __future__ import annotations

import csv
import json
import subprocess
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest

from helpers import TINY_CFG, randomize_lae, tiny_cfg, tiny_tcm, tiny_vbr, write_small_image
from lae_vbr.evaluation import (
    EvalError,
    RDSettings,
    curve_from_points,
    load_test_images,
    measure_checkpoints,
    read_curve,
    summarise_rd,
    write_curve,
    write_rd,
)
from lae_vbr.evaluation.provenance import command_line, curve_name, merge_meta, run_meta
from lae_vbr.evaluation.summary import distinct_names, merge_curves
from lae_vbr.models import CompressAIBackbone, GainVariableRate, VariableRateCodec
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, LoadedCodec, build_codec, save_codec_bundle
from lae_vbr.paths import REPO_ROOT, portable_path, portable_paths, shared_dir

LMBDAS = list(PAPER_MSE_LMBDAS)


# -- names ----------------------------------------------------------------------------------
def _mbt(rate=None, **kw) -> LoadedCodec:
    backbone = CompressAIBackbone("mbt2018-mean", N=32, M=64)
    model = build_codec(backbone, rate) if rate else backbone
    cfg = {"model": {"backbone": {"architecture": "mbt2018-mean"}}, **kw}
    return LoadedCodec(model, LMBDAS, "run", cfg)


@pytest.mark.parametrize(
    ("loaded", "name"),
    [
        (lambda: LoadedCodec(tiny_vbr(), LMBDAS, "run", TINY_CFG), "tcm-lae-vbr-mse"),
        (lambda: LoadedCodec(tiny_vbr(), LMBDAS, "tcm-vbr:ref", {}), "tcm-lae-vbr-mse"),
        (
            lambda: LoadedCodec(tiny_tcm(), [3.0], "run", {"lmbda": {"distortion": "ms-ssim"}}),
            "tcm-ms-ssim",
        ),
        (
            lambda: LoadedCodec(
                VariableRateCodec(tiny_tcm(), decoder_lae=False), LMBDAS, "run", TINY_CFG
            ),
            "tcm-lae-enc-vbr-mse",
        ),
        (
            lambda: LoadedCodec(
                VariableRateCodec(tiny_tcm(), contextual=False), LMBDAS, "run", TINY_CFG
            ),
            "tcm-lae-noctx-vbr-mse",
        ),
        (lambda: _mbt(), "mbt2018-mean-mse"),
        (lambda: _mbt(VariableRateCodec), "mbt2018-mean-lae-vbr-mse"),
        (
            lambda: _mbt(partial(GainVariableRate.around, lmbdas=LMBDAS)),
            "mbt2018-mean-gain-vbr-mse",
        ),
    ],
    ids=[
        "lae",
        "reference",
        "fixed-msssim",
        "encoder-only",
        "no-context",
        "mbt",
        "mbt-lae",
        "gain",
    ],
)
def test_curve_names_follow_compressai(loaded, name: str) -> None:
    """``<arch>-<metric>``, the architecture ending in ``-vbr`` when the model is
    variable-rate; never CompressAI's own ``mbt2018-mean-vbr`` (its gain model, an anchor)."""
    assert curve_name(loaded()) == name


# -- paths and the run's meta -----------------------------------------------------------------
def test_portable_paths_keep_nothing_of_the_machine() -> None:
    shared = shared_dir()
    assert portable_path(REPO_ROOT / "src" / "eval.py") == "src/eval.py"
    assert portable_path(shared / "data" / "kodak") == "$LAE_VBR_SHARED/data/kodak"
    assert portable_path("/elsewhere/runs/0/checkpoints/last.ckpt") == "last.ckpt"
    outside = ["/x/runs/0/checkpoints/last.ckpt", "/x/runs/1/checkpoints/last.ckpt", "/y/a.pt"]
    assert portable_paths(outside) == [
        "0/checkpoints/last.ckpt", "1/checkpoints/last.ckpt", "a.pt"
    ]  # fmt: skip
    argv = [str(REPO_ROOT / "src" / "eval.py"), f"ckpt_path={REPO_ROOT}/logs/r/last.ckpt",
            f"test_dir={shared}/data/kodak", "runs=[/x/sweep/0,/x/sweep/1]", "max_images=4",
            "anchors=[https://example.org/a]"]  # fmt: skip
    assert command_line(argv) == (
        "src/eval.py ckpt_path=logs/r/last.ckpt 'test_dir=$LAE_VBR_SHARED/data/kodak' "
        "'runs=[0,1]' max_images=4 'anchors=[https://example.org/a]'"
    )


def test_run_meta_names_version_commit_command_and_date() -> None:
    meta = run_meta(["src/eval.py", "study=rd"])
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert meta["git.commit"].removesuffix("-dirty") == head and len(head) == 40
    assert meta["command"] == "src/eval.py study=rd" and meta["lae_vbr.version"]
    age = datetime.now(timezone.utc) - datetime.fromisoformat(meta["date"])
    assert timedelta(0) <= age < timedelta(minutes=5)


# -- files ----------------------------------------------------------------------------------
def test_model_results_file_has_name_meta_and_no_machine_paths(tmp_path: Path) -> None:
    """A checkpoint outside the repository, images in a temporary folder: the results, the
    per-image rows and the BD-rate table name them by file name only."""
    model = tiny_vbr()
    randomize_lae(model.modnet_ga, 0.5, seed=1)
    ckpt = save_codec_bundle(
        tmp_path / "models" / "vbr.pt", model, {**tiny_cfg(), "run_name": "r1"}
    )
    folder = write_small_image(tmp_path / "images")
    images = load_test_images(folder)
    settings = RDSettings(lmbda_grid=(0.0, 5.0), warmup=False, device="cpu")
    measured = measure_checkpoints([ckpt], images, settings, source=str(folder))
    assert measured.name == "tcm-lae-vbr-mse"
    files = write_rd(summarise_rd([measured]), tmp_path / "out")

    data = json.loads(files["tcm-lae-vbr-mse"].read_text())
    assert files["tcm-lae-vbr-mse"].name == "tcm-lae-vbr-mse.json"
    assert list(data) == ["name", "description", "meta", "results"]  # CompressAI-Trainer's order
    meta = data["meta"]
    assert meta["model.name"] == "tcm-lae-vbr" and meta["model.metric"] == "mse"
    assert meta["model.run"] == "r1" and meta["criterion.lmbda"] == LMBDAS
    assert meta["paths.model_checkpoint"] == "vbr.pt" and len(meta["model.weights"]) == 16
    assert (meta["dataset"], meta["dataset.path"], meta["dataset.num_images"]) == (
        "images", "images", 1
    )  # fmt: skip
    assert (meta["type"], meta["opt_metric"], meta["device"]) == ("image", "mse-rgb", "cpu")
    assert {"git.commit", "command", "date", "misc.num_threads"} <= set(meta)
    assert data["description"].startswith("lae-vbr eval of vbr.pt on 1 images of images;")
    with files["per_image_csv"].open() as f:
        assert [row["checkpoint"] for row in csv.DictReader(f)] == ["vbr.pt", "vbr.pt"]
    assert "meta" in json.loads(files["bd_rate_json"].read_text())
    for path in (tmp_path / "out").rglob("*"):
        if path.suffix in (".json", ".csv", ".md"):
            assert str(tmp_path) not in path.read_text(), path


def test_files_without_meta_read_as_before(tmp_path: Path, shared: Path) -> None:
    """CompressAI's files and this project's older ones have no ``meta``: read, written back
    unchanged, merged (the meta of merged curves: agreed values kept, others listed)."""
    old = {"name": "m", "description": "d", "results": {"bpp": [0.1, 0.2], "psnr-rgb": [30, 33]}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    curve = read_curve(tmp_path / "old.json")
    assert curve.meta == {} and curve.to_json() == old
    anchor = read_curve(shared / "anchors" / "kodak" / "bmshj2018-hyperprior-vbr-ans.json")
    assert anchor.name == "bmshj2018-hyperprior-vbr-mse" and anchor.meta == {}
    assert merge_curves([curve, curve]).meta == {}

    a = curve_from_points("tcm-mse", "", [{"bpp": 0.1, "psnr-rgb": 30}], meta={"x": 1, "run": "a"})
    b = curve_from_points("tcm-mse", "", [{"bpp": 0.2, "psnr-rgb": 33}], meta={"x": 1, "run": "b"})
    assert merge_meta([a.meta, b.meta]) == {"x": 1, "run": ["a", "b"]}
    back = read_curve(write_curve(a, tmp_path / "a.json"), kind="model")
    assert back.meta == a.meta and back == a


def test_summary_tells_runs_of_one_architecture_apart() -> None:
    point = [{"bpp": 0.1, "psnr-rgb": 30}]
    curves = [curve_from_points("tcm-lae-vbr-mse", "", point, meta={"model.run": r}) for r in "ab"]
    curves.append(curve_from_points("tcm-mse", "", point))
    distinct_names(curves)
    assert [c.name for c in curves] == [
        "tcm-lae-vbr-mse (a)", "tcm-lae-vbr-mse (b)", "tcm-mse"
    ]  # fmt: skip
    twins = [curve_from_points("x", "", point), curve_from_points("x", "", point)]
    with pytest.raises(EvalError, match="two curves share a name"):
        distinct_names(twins)
