"""Training recipes: fixed-rate teachers, the two VBR stages, sweeps and their names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import write_small_image, write_tiny_teachers
from lae_vbr.config import to_container
from lae_vbr.models.registry import PAPER_MSE_LMBDAS
from lae_vbr.models.state_dict import load_state_dict_file
from lae_vbr.stages import LatentDistillationModule
from lae_vbr.training import ConfigError, train
from test_train import TINY_RUN, _run_cli, make_cfg

SHORT = [
    "data=sample",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "callbacks=default",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
    "~callbacks.lr_monitor",
    "validate_after_fit=false",
]


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_image(tmp_path_factory.mktemp("val"))


def test_stage1_trains_only_the_laes_then_stage2_everything(tmp_path: Path, val_dir: Path) -> None:
    teachers = write_tiny_teachers(tmp_path / "teachers")
    common = [*TINY_RUN, *SHORT, f"data.val_dir={val_dir}"]
    stage1 = make_cfg(
        tmp_path / "s1",
        [*common, "experiment=vbr_stage1", f"stage.teachers={tmp_path / 'teachers'}"],
    )
    metrics = train(stage1)
    assert metrics["train/latent_distill"] > 0 and metrics["train/lae_l2"] > 0
    assert metrics["train/images_per_sec"] > 0

    s1 = load_state_dict_file(tmp_path / "s1" / "checkpoints" / "last.ckpt")
    top = load_state_dict_file(teachers[-1])  # λ = 0.05: the backbone's initialisation
    backbone_keys = [k for k in s1 if not k.startswith("modnet_")]
    assert set(backbone_keys) == set(top)  # no teacher weights in the checkpoint
    floats = [k for k in backbone_keys if s1[k].is_floating_point() and "scale_table" not in k]
    assert [k for k in floats if not torch.equal(s1[k], top[k])] == []  # frozen at the teacher
    assert s1["modnet_ga.mask.lmd_map.fc_layers.1.weight"].abs().sum() > 0  # LAEs trained
    assert s1["modnet_gs.mask.lmd_map.fc_layers.1.weight"].abs().sum() > 0

    s1_ckpt = tmp_path / "s1" / "checkpoints" / "last.ckpt"
    stage2 = make_cfg(tmp_path / "s2", [*common, "experiment=vbr_stage2", f"init_from={s1_ckpt}"])
    train(stage2)
    s2 = load_state_dict_file(tmp_path / "s2" / "checkpoints" / "last.ckpt")
    weight = "g_a.0.conv1.weight"
    assert not torch.equal(s2[weight], s1[weight])  # the backbone trains now ...
    assert torch.allclose(s2[weight], s1[weight], atol=1e-3)  # ... from stage 1's weights


def test_stage1_without_teachers_starts_from_one_fixed_rate_model(tmp_path: Path) -> None:
    """experiment=demo/lae's schedule: no distillation, the backbone from init_from, frozen."""
    teachers = write_tiny_teachers(tmp_path / "teachers")
    no_teachers = [*TINY_RUN, *SHORT, "experiment=vbr_stage1", "stage.latent_weight=0"]
    with pytest.raises(ConfigError, match="init_from"):
        LatentDistillationModule.from_config(to_container(make_cfg(tmp_path / "a", no_teachers)))

    metrics = train(make_cfg(tmp_path / "b", [*no_teachers, f"init_from={teachers[-1]}"]))
    assert "train/latent_distill" not in metrics and metrics["train/lae_l2"] > 0
    trained = load_state_dict_file(tmp_path / "b" / "checkpoints" / "last.ckpt")
    top = load_state_dict_file(teachers[-1])
    assert torch.equal(trained["g_a.0.conv1.weight"], top["g_a.0.conv1.weight"])  # frozen


def test_stage1_teachers_follow_the_drawn_lambda(tmp_path: Path) -> None:
    teachers = write_tiny_teachers(tmp_path / "teachers")
    overrides = [*TINY_RUN, "experiment=vbr_stage1", f"stage.teachers={list(map(str, teachers))}"]
    module = LatentDistillationModule.from_config(to_container(make_cfg(tmp_path, overrides)))
    x = torch.rand(4, 3, 128, 128)  # a training crop: no padding
    idx = torch.tensor([0.0, 5.0, 2.0, 5.0])
    target = module.teacher_latents(x, idx)
    with torch.no_grad():
        for i, k in enumerate(idx.long().tolist()):
            expected = module._teachers[k].g_a(x[i : i + 1])
            assert torch.allclose(target[i : i + 1], expected, atol=1e-6)
    assert not any("teacher" in k for k in module.state_dict())
    both = {id(p) for p in module._l2_params}
    assert {id(p) for p in module.model.modnet_gs.parameters() if p.requires_grad} <= both

    reference = make_cfg(tmp_path, [*overrides, "stage.l2_modules=[modnet_ga]"])
    only_ga = LatentDistillationModule.from_config(to_container(reference))
    assert {id(p) for p in only_ga._l2_params} == {
        id(p) for p in only_ga.model.modnet_ga.parameters() if p.requires_grad
    }


def test_stage1_refuses_to_start_without_every_teacher(tmp_path: Path) -> None:
    folder = tmp_path / "teachers"
    write_tiny_teachers(folder, [v for v in PAPER_MSE_LMBDAS if v != 0.013])
    cfg = make_cfg(tmp_path, [*TINY_RUN, "experiment=vbr_stage1", f"stage.teachers={folder}"])
    with pytest.raises(ConfigError, match=r"missing: λ=0.013 \(index 3\): no run for it") as err:
        train(cfg)
    assert "0.0035" not in str(err.value)
    cfg = make_cfg(tmp_path, [*TINY_RUN, "experiment=vbr_stage1"])
    with pytest.raises(ConfigError, match=r"λ=0.0025 .* λ=0.05 \(index 5\): not set"):
        train(cfg)


def test_fixed_rate_sweep_gives_one_named_run_per_lambda(tmp_path: Path) -> None:
    """The teachers' multirun: a folder, a checkpoint and a run name with the λ per run."""
    proc = _run_cli(
        [
            "-m",
            "experiment=fixed_tcm",
            "lmbda.value=0.05,0.0025",
            *TINY_RUN,
            *SHORT,
            "data.max_val_images=1",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    groups = set()
    for num, value in enumerate((0.05, 0.0025)):
        run = tmp_path / f"{num}_fixed_tcm_tiny_l{value}"
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
        cfg = ckpt["hyper_parameters"]["cfg"]
        assert cfg["run_name"] == f"fixed_tcm_tiny_l{value}"
        assert cfg["lmbda"]["values"] == [value] and not cfg["model"]["rate"]
        assert cfg["tags"] == ["fixed", "tcm_tiny", f"l{value}"]
        groups.add(cfg["group"])
    assert len(groups) == 1  # one W&B group per sweep


def test_sweep_names_runs_after_its_choices(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        ["experiment=vbr_tcm", "model/backbone=mbt2018_mean", "model/rate=gain", "lmbda=msssim"],
    )
    assert cfg.run_name == "vbr_mbt2018_mean_gain_msssim"
    assert list(cfg.tags) == ["vbr", "mbt2018_mean", "gain", "msssim"]
    assert cfg.logger.wandb.name == cfg.run_name and cfg.logger.wandb.group == cfg.group
    assert cfg.loss.distortion == "ms-ssim" and cfg.model.rate.lmbdas == [3, 5, 8, 16, 36, 64]
