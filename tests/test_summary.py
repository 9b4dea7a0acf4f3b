"""The sweep summary: runs → evaluations (cached in the runs) → one plot and BD-rate table,
through Hydra and as plain functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from helpers import TINY_TCM, randomize_lae, tiny_cfg, tiny_tcm, tiny_vbr, write_small_image
from lae_vbr.config import register_resolvers
from lae_vbr.evaluation import RDCurve, curve_from_points, write_curve
from lae_vbr.evaluation.summary import find_runs, run_curve, summarize, sweep_curves
from lae_vbr.models.registry import save_codec_bundle
from lae_vbr.paths import REPO_ROOT

register_resolvers()


def _fake_sweep(folder: Path) -> None:
    """Two variable-rate runs and a two-λ fixed-rate sweep, as training leaves them."""
    for n, name in enumerate(("vbr_a", "vbr_b")):
        torch.manual_seed(n)
        model = tiny_vbr()
        randomize_lae(model.modnet_ga, scale=0.3, seed=n)
        cfg = {**tiny_cfg(), "run_name": name}
        save_codec_bundle(folder / f"{n}_{name}" / "checkpoints" / "last.ckpt", model, cfg)
    for n, value in enumerate((0.05, 0.0025), start=2):
        torch.manual_seed(n)
        name = f"fixed_tcm_tiny_l{value}"
        cfg = {"model": {"_target_": "lae_vbr.models.registry.build_codec", "backbone": TINY_TCM,
                         "lae": {"enabled": False}, "num_lmbdas": 1},
               "lmbda": {"values": [value], "distortion": "mse"}, "run_name": name}  # fmt: skip
        save_codec_bundle(folder / f"{n}_{name}" / "checkpoints" / "last.ckpt", tiny_tcm(), cfg)


def _summary_cfg(out: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(out)
    return cfg


def test_summary_collects_every_run_into_one_plot_and_table(tmp_path: Path) -> None:
    val_dir = write_small_image(tmp_path / "val")
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep)
    overrides = ["study=summary", f"runs={sweep}", f"test_dir={val_dir}", "lmbda_step=2.5",
                 "progress=false", "warmup=false", "anchors=[]"]  # fmt: skip
    files = summarize(_summary_cfg(tmp_path / "out", overrides))

    assert (tmp_path / "out" / "rd.png").is_file()
    results = tmp_path / "out" / "results"
    assert {p.stem for p in results.glob("*.json")} == {
        "tcm-lae-vbr-mse-vbr_a", "tcm-lae-vbr-mse-vbr_b", "tcm-mse"
    }  # fmt: skip
    fixed = json.loads((results / "tcm-mse.json").read_text())
    assert sorted(fixed["results"]["lmbda"]) == [0.0025, 0.05]  # the two runs, one curve
    assert fixed["meta"]["model.name"] == "tcm" and fixed["meta"]["model.metric"] == "mse"
    assert fixed["meta"]["model.run"] == ["fixed_tcm_tiny_l0.05", "fixed_tcm_tiny_l0.0025"]
    # two runs of one architecture: CompressAI's name in their own files, the run's name added
    # where they meet
    own = json.loads((sweep / "0_vbr_a" / "eval" / "results" / "tcm-lae-vbr-mse.json").read_text())
    assert own["name"] == "tcm-lae-vbr-mse" and own["meta"]["model.run"] == "vbr_a"
    vbr = json.loads((results / "tcm-lae-vbr-mse-vbr_a.json").read_text())
    assert vbr["name"] == "tcm-lae-vbr-mse (vbr_a)" and vbr["meta"] == own["meta"]
    assert sorted(vbr["results"]["lmbda_idx"]) == [0.0, 2.5, 5.0]
    table = json.loads(files["bd_rate_json"].read_text())["results"]
    pairs = {(r["test"], r["anchor"]) for r in table}
    a, b = "tcm-lae-vbr-mse (vbr_a)", "tcm-lae-vbr-mse (vbr_b)"
    assert (a, b) in pairs and (b, "tcm-mse") in pairs
    assert f"| {a} |" in files["bd_rate_md"].read_text()
    written = [*(tmp_path / "out").rglob("*.json"), *sweep.glob("*/eval/**/*.json")]
    assert not [p for p in written if str(tmp_path) in p.read_text()]  # no machine paths

    # Every run keeps its evaluation; a second summary reuses it instead of coding again.
    cached = sorted(sweep.glob("*/eval/results/*.json"))
    assert len(cached) == 4
    stamps = [p.stat().st_mtime_ns for p in cached]
    summarize(_summary_cfg(tmp_path / "out2", overrides))
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_sweep_curves_as_plain_functions(tmp_path: Path) -> None:
    """Runs found, evaluated by any function, cached, and fixed-rate runs merged (whether a
    run is fixed-rate is asked of its model): no Hydra, and no coding."""
    sweep = tmp_path / "sweep"
    configs = {"0_vbr": (tiny_cfg(), tiny_vbr())}
    for n, value in enumerate((0.05, 0.0025), start=1):
        fixed = tiny_cfg(lae={"enabled": False})
        fixed["lmbda"]["values"] = [value]
        configs[f"{n}_fixed_l{value}"] = (fixed, tiny_tcm())
    for run, (cfg, model) in configs.items():
        save_codec_bundle(sweep / run / "checkpoints" / "last.ckpt", model, cfg)
    evaluated: list[Path] = []

    def evaluate(checkpoint: Path, out_dir: Path) -> RDCurve:
        evaluated.append(checkpoint)
        name = checkpoint.parent.parent.name.split("_", 1)[1]
        point = {"bpp": 0.1 * len(evaluated), "psnr-rgb": 30.0 + len(evaluated)}
        curve = curve_from_points(name, "", [point])
        write_curve(curve, out_dir / "results" / f"{name}.json")
        return curve

    runs = find_runs([str(sweep)])
    assert [r.name for r in runs] == list(configs)
    curves = sweep_curves(runs, "last.ckpt", lambda run: run_curve(run, "last.ckpt", evaluate))
    assert [c.name for c in curves] == ["vbr", "fixed"]  # the two fixed-rate runs: one curve
    assert curves[1].results["bpp"] == pytest.approx([0.2, 0.3])
    again = sweep_curves(runs, "last.ckpt", lambda run: run_curve(run, "last.ckpt", evaluate))
    assert len(evaluated) == 3 and [c.name for c in again] == ["vbr", "fixed"]  # cached
    run_curve(runs[0], "last.ckpt", evaluate, reevaluate=True)
    assert len(evaluated) == 4
