"""Small models and configs shared by the tests (importable as ``helpers``)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lae_vbr.models import TCM, VariableRateCodec
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, save_codec_bundle
from lae_vbr.paths import shared_dir

#: The tiny TCM of ``conf/model/backbone/tcm_tiny.yaml`` (about 2 M parameters).
TINY_TCM = {
    "_target_": "lae_vbr.models.TCM",
    "N": 16,
    "M": 64,
    "num_slices": 4,
    "max_support_slices": 4,
    "hyper_channels": 32,
    "head_dims": [8] * 6,
    "hyper_head_dim": 16,
    "atten_dim": 32,
    "atten_head_dim": 16,
    "slice_hidden": [48, 32],
}
FULL_LAE = {"enabled": True, "encoder": True, "decoder": True, "contextual": True, "layers": 2}

#: A complete codec config (what checkpoints store under ``hyper_parameters.cfg``).
TINY_CFG = {
    "model": {
        "_target_": "lae_vbr.models.registry.build_codec",
        "backbone": TINY_TCM,
        "lae": FULL_LAE,
        "num_lmbdas": len(PAPER_MSE_LMBDAS),
    },
    "lmbda": {"name": "paper_mse", "values": list(PAPER_MSE_LMBDAS), "distortion": "mse"},
}


def tiny_tcm() -> TCM:
    return TCM(**{k: v for k, v in TINY_TCM.items() if k != "_target_"})


def tiny_vbr() -> VariableRateCodec:
    return VariableRateCodec(tiny_tcm(), latent_channels=TINY_TCM["M"], num_lmbdas=6)


def tiny_cfg(**model_overrides: object) -> dict:
    cfg = copy.deepcopy(TINY_CFG)
    cfg["model"].update(model_overrides)
    return cfg


@torch.no_grad()
def randomize_lae(lae: nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Give an LAE a non-trivial mask (its last λ layer and α start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    last = lae.mask.lmd_map.fc_layers[-1]
    last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * scale)
    last.bias.copy_(torch.randn(last.bias.shape, generator=gen) * scale)
    if lae.mask.contextual:
        lae.mask.alpha.fill_(0.1)


def tiny_codec_with_laes(scale: float = 0.05) -> tuple[dict, nn.Module]:
    """The config and model of the tiny TCM-VBR (seed 0) with λ-dependent LAE masks."""
    import hydra

    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = hydra.utils.instantiate(cfg["model"])
    randomize_lae(model.modnet_ga, scale, seed=1)
    randomize_lae(model.modnet_gs, scale, seed=2)
    return cfg, model


def write_tiny_teachers(folder: Path, lmbdas: Sequence[float] = PAPER_MSE_LMBDAS) -> list[Path]:
    """One fixed-rate tiny TCM per λ, laid out as a ``fixed_tcm`` sweep (stage-1 teachers)."""
    paths = []
    for i, value in enumerate(lmbdas):
        torch.manual_seed(100 + i)
        cfg = {"model": TINY_TCM, "lmbda": {"values": [value]}, "run_name": f"teacher{i}"}
        path = folder / f"{i}_fixed_tcm_tiny_l{value}" / "checkpoints" / "last.ckpt"
        paths.append(save_codec_bundle(path, tiny_tcm(), cfg))
    return paths


def write_small_image(folder: Path, name: str = "val.png") -> Path:
    """One small 80×96 photo-like image (a ramp plus noise): cheap six-λ validation passes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96, dtype=np.float32)
    image = ramp[None, :, None] * 0.6 + rng.uniform(0, 100, (80, 96, 3))
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / name)
    return folder


def write_noisy_ramp(path: Path, height: int, width: int, noise: float, seed: int) -> Path:
    """A horizontal grey ramp plus Gaussian noise (std ``noise``), as an 8-bit RGB PNG."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, noise, ramp.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


#: Parts of the shared folder that scripts/get_test_data.py downloads.
PUBLIC_PARTS = ("data/kodak", "anchors/kodak")
#: Parts only the maintainers' archive (LAE_VBR_SHARED_URL) provides.
PRIVATE_PARTS = ("data/photos", "fixtures/seed_reference")


def require_shared(*parts: str) -> Path:
    """The shared folder with every part in ``parts`` present; otherwise the test is skipped
    or fails, as ``conftest.py`` describes."""
    root = shared_dir()
    missing = [part for part in parts if not (root / part).is_dir()]
    if not missing:
        return root
    private = all(part in PRIVATE_PARTS for part in missing)
    how = (
        "the maintainers' archive (LAE_VBR_SHARED_URL)"
        if private
        else "python scripts/get_test_data.py, or set LAE_VBR_SHARED"
    )
    message = f"shared test material {', '.join(missing)} not found under {root} ({how})"
    strict = os.environ.get("CI", "").lower() == "true"
    public_only = private and os.environ.get("LAE_VBR_PUBLIC_DATA_ONLY") == "1"
    if strict and not public_only:
        pytest.fail(message)
    pytest.skip(message)
