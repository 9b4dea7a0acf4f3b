"""Data-parallel training: per-λ validation metrics across processes, and the SLURM launcher."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf
from PIL import Image
from submitit.slurm.slurm import SlurmExecutor

from lae_vbr.config import register_resolvers
from lae_vbr.data import ImageDataModule
from lae_vbr.module import CompressionModule
from lae_vbr.paths import REPO_ROOT
from test_train import TINY_RUN, _run_cli

register_resolvers()


def _write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """Images of different content (so every per-image metric differs) and sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, (name, (h, w)) in enumerate(sizes.items()):
        rng = np.random.default_rng(n)
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        image = ramp * 0.5 + rng.uniform(0, 40 + 80 * n, (h, w, 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def _validate(ckpt: Path, val_dir: Path) -> dict[str, float]:
    module = CompressionModule.load_from_checkpoint(ckpt, weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=ckpt.parent)  # fmt: skip
    data = ImageDataModule(val_dir=val_dir, num_workers=0)
    return {k: float(v) for k, v in trainer.validate(module, data, verbose=False)[0].items()}


def test_ddp_validation_metrics_equal_a_single_process_run(tmp_path: Path) -> None:
    """3 images on 2 processes: each counted once, MS-SSIM seen by one process only."""
    # rank 0 gets a and c, rank 1 gets b: the only image large enough for MS-SSIM
    sizes = {"a": (64, 80), "b": (192, 192), "c": (64, 80)}
    val_dir = _write_images(tmp_path / "val", sizes)
    run = tmp_path / "run"
    proc = _run_cli(
        [
            *TINY_RUN,
            f"data.val_dir={val_dir}",
            "data.max_val_images=null",
            "trainer=ddp_sim",
            "logger=csv",
            "callbacks=default",
            "~callbacks.rich_progress_bar",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "validate_after_fit=false",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    with (run / "csv" / "metrics.csv").open() as f:
        (logged,) = [r for r in csv.DictReader(f) if r.get("val/bpp/l0")]

    single = _validate(run / "checkpoints" / "last.ckpt", val_dir)
    keys = [f"val/{m}/l{i}" for m in ("bpp", "psnr", "loss", "ms_ssim") for i in range(6)]
    assert set(keys) <= set(single)
    for key in keys:
        assert float(logged[key]) == pytest.approx(single[key], rel=1e-5), key

    # The check can tell: a padded split (image a twice) gives other values.
    padded_dir = _write_images(tmp_path / "padded", {**sizes, "d": sizes["a"]})
    (padded_dir / "d.png").write_bytes((val_dir / "a.png").read_bytes())
    padded = _validate(run / "checkpoints" / "last.ckpt", padded_dir)
    gaps = [abs(float(logged[k]) / padded[k] - 1) for k in keys if "ms_ssim" not in k]
    assert max(gaps) > 1e-2


def test_slurm_launcher_config_requests_nodes_and_gpus_of_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                 "trainer.num_nodes=2", "hydra.launcher.partition=gpu"]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["partition"] == "gpu" and params["timeout_min"] == 4320
    assert (cfg.trainer.strategy, cfg.trainer.accelerator) == ("ddp", "gpu")

    # What the plugin hands to submitit, rendered as the sbatch script (no SLURM here).
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"submitit_folder", "max_num_timeout"}
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip}
    )
    script = executor._executor._make_submission_file_text("python -u job.py", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--cpus-per-task=10", "--time=4320"):  # fmt: skip
        assert f"#SBATCH {line}" in script, line
