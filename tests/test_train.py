"""The training entry point, composed by Hydra exactly as ``src/train.py`` does it."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from helpers import write_small_image, write_tiny_teachers
from lae_vbr.config import register_resolvers
from lae_vbr.models.registry import load_codec
from lae_vbr.module import CompressionModule
from lae_vbr.paths import REPO_ROOT
from lae_vbr.training import ConfigError, train

CONF = REPO_ROOT / "conf"
TINY_RUN = [
    "model/backbone=tcm_tiny",
    "+trainer.num_sanity_val_steps=0",
    "trainer=cpu",
    "logger=none",
    "callbacks=none",
    "data.crop_size=128",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.max_val_images=1",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]

register_resolvers()


@pytest.fixture(scope="module")
def small_val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small validation image, so the six-λ validation passes stay cheap."""
    return write_small_image(tmp_path_factory.mktemp("val"))


def make_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run, the task sees its config without the hydra node
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
    return cfg


#: Every experiment; files named "_*" are fragments other experiments include.
EXPERIMENTS = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in (CONF / "experiment").rglob("*.yaml")
    if not p.name.startswith("_")
)


# LAE-only stages: the backbone comes frozen from `init_from`.
FROZEN_BACKBONE_EXPERIMENTS = {"demo/lae", "demo/recentred_lae", "demo/wide_lae"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(
    tmp_path: Path, small_val_dir: Path, experiment: str
) -> None:
    overrides = [
        f"experiment={experiment}",
        "trainer=cpu",
        "debug=fdr",
        "logger=none",
        "data=sample",
        "data.batch_size=1",
        "data.crop_size=128",
        f"data.val_dir={small_val_dir}",
    ]
    if experiment == "vbr_stage1":  # needs one fixed-rate teacher per λ: tiny ones
        write_tiny_teachers(tmp_path / "teachers")
        overrides += ["model/backbone=tcm_tiny", f"stage.teachers={tmp_path / 'teachers'}"]
    if experiment == "latent_toy":  # two frozen fixed-rate models: tiny ones
        low, *_, high = write_tiny_teachers(tmp_path / "teachers")
        overrides += [f"high_ckpt={high}", f"low_ckpt={low}"]
    if experiment in FROZEN_BACKBONE_EXPERIMENTS:  # a frozen backbone from a checkpoint
        *_, high = write_tiny_teachers(tmp_path / "teachers")
        overrides += ["model/backbone=tcm_tiny", f"init_from={high}"]
    cfg = make_cfg(tmp_path, overrides)
    metrics = train(cfg)
    assert metrics["train/loss"] > 0
    if experiment == "latent_toy":  # its own validation: latent PSNRs and the coded chain
        assert {"val/latent_psnr_low", "val/chain_bpp", "val/chain_psnr"} <= set(metrics)
    else:
        assert all(f"val/bpp/l{i}" in metrics for i in range(len(cfg.lmbda["values"])))


FIXED_RATE_EXPERIMENTS = {
    "fixed_tcm",
    "demo/fixed",
    "claims/fixed",
    "claims/start",
    "claims/paper/fixed",
    "claims/paper/start",
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_names_its_runs_after_the_swept_choices(
    tmp_path: Path, experiment: str
) -> None:
    """A sweep over backbones or rate methods must give its runs distinct names (the summary
    study refuses two curves of one name)."""
    sweeps = [["model/backbone=tcm_tiny"], ["model/backbone=mbt2018_mean"]]
    if experiment == "latent_toy":
        pass
    elif experiment in FIXED_RATE_EXPERIMENTS:
        sweeps += [["lmbda.value=0.0025"], ["lmbda.value=0.05"]]
    else:
        sweeps += [["model/rate=lae"], ["model/rate=lae_no_context"], ["lmbda=msssim"]]
    names = [make_cfg(tmp_path, [f"experiment={experiment}", *o]).run_name for o in sweeps]
    if experiment == "latent_toy":  # its two checkpoints bring their models: named by task
        assert names == ["latent_toy"] * len(names)
        return
    assert len(set(names)) == len(names), names


def test_quickstart_curve_rises_with_lambda(tmp_path: Path) -> None:
    """The quickstart as a user runs it (only the logger off): its validation R-D curve has
    rate and PSNR rising with the λ index, and it starts from the bundled model."""
    cfg = make_cfg(tmp_path, ["experiment=quickstart", "logger=none"])
    metrics = train(cfg)
    count = len(cfg.lmbda["values"])
    bpp = [metrics[f"val/bpp/l{i}"] for i in range(count)]
    psnr = [metrics[f"val/psnr/l{i}"] for i in range(count)]
    assert all(a < b for a, b in itertools.pairwise(bpp)), bpp
    assert all(a < b for a, b in itertools.pairwise(psnr)), psnr
    assert bpp[-1] > 2 * bpp[0]  # a variable-rate model whose rate does vary


def test_checkpoint_rebuilds_model_and_resume_continues(
    tmp_path: Path, small_val_dir: Path
) -> None:
    common = [
        *TINY_RUN,
        f"data.val_dir={small_val_dir}",
        "callbacks=default",
        "~callbacks.rich_progress_bar",
        "~callbacks.model_summary",
        "+trainer.limit_train_batches=2",
        "optim.scheduler.milestones=[1]",
        "optim.scheduler.factors=[0.5]",
        "validate_after_fit=false",
    ]
    first = make_cfg(tmp_path / "a", [*common, "trainer.max_epochs=2"])
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 4
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2
    # A checkpoint carries its config: no options needed to rebuild and to code with it.
    module = CompressionModule.load_from_checkpoint(last, weights_only=True)
    assert module.model.variable_rate and module.loss.num_lmbdas == 6
    codec = load_codec(last)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        enc = codec.model.compress(x, 2.0)
    assert len(enc["strings"][0][0]) > 0

    resumed = make_cfg(
        tmp_path / "b",
        [*common, "trainer.max_epochs=3", f"ckpt_path={last}"],
    )
    train(resumed)
    # A fresh start would have stopped at 2 steps with a new optimiser; a resumed run continues
    # the same step count, Adam moments and LR schedule.
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    adam_state = ckpt["optimizer_states"][0]["state"]
    assert {int(v["step"]) for v in adam_state.values()} == {6}
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 3
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.5e-4)


def test_fixed_rate_checkpoint_initialises_vbr_training(
    tmp_path: Path, small_val_dir: Path
) -> None:
    fixed = make_cfg(
        tmp_path / "fixed",
        [
            *TINY_RUN,
            f"data.val_dir={small_val_dir}",
            "model/rate=fixed",
            "lmbda.values=[0.05]",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "callbacks=default",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            "~callbacks.lr_monitor",
            "validate_after_fit=false",
        ],
    )
    train(fixed)
    ckpt = tmp_path / "fixed" / "checkpoints" / "last.ckpt"
    fixed_codec = load_codec(ckpt)
    assert not fixed_codec.variable_rate
    vbr = make_cfg(
        tmp_path / "vbr",
        [*TINY_RUN, "debug=fdr", f"data.val_dir={small_val_dir}", f"init_from={ckpt}"],
    )
    metrics = train(vbr)
    assert metrics["train/loss"] > 0


def _run_cli(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    # one thread per process, as in the tests themselves (conftest.py)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "src" / "train.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_ddp_sim_two_processes(tmp_path: Path, small_val_dir: Path) -> None:
    """Two CPU processes through the real entry point (Lightning re-launches the script)."""
    val_dir = tmp_path / "val"  # one validation image per process
    val_dir.mkdir()
    for name in ("a.png", "b.png"):
        (val_dir / name).write_bytes((small_val_dir / "val.png").read_bytes())
    proc = _run_cli(
        [
            *TINY_RUN,
            f"data.val_dir={val_dir}",
            "trainer=ddp_sim",
            "logger=csv",
            "callbacks=default",
            "~callbacks.rich_progress_bar",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "data.max_val_images=2",
            "validate_after_fit=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    lines = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/loss" in lines[0].split(",")
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout  # the second process really ran


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.crop_size=200"], "does not suit"),
        (["lmbda.values=[0.05]"], "at least two λ values"),
        (["lmbda=msssim", "data.crop_size=128"], "at least 176"),
        (["trainer.precision=16-mixed"], "fp16"),
    ],
)
def test_misconfiguration_fails_before_training(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    cfg = make_cfg(tmp_path, [*TINY_RUN, *overrides])
    with pytest.raises(ConfigError, match=message):
        train(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model/backbone=no_such_model"], "no_such_model"),
        (["data.crop_size=200"], "does not suit"),
        (["ckpt_path=/no/such/last.ckpt"], "ckpt_path=/no/such/last.ckpt: no such file"),
    ],
)
def test_cli_reports_config_errors_without_traceback(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    proc = _run_cli([*TINY_RUN, *overrides, f"hydra.run.dir={tmp_path}"], timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr  # not a terminal: no colour codes
