"""Compatibility with checkpoints released for the reference code (LIC_TCM / VBR_work).

The key and shape lists come from ``shared/fixtures/seed_reference/*_weights_spec.json``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from helpers import randomize_lae, require_shared
from lae_vbr.models import TCM, TCMVBR
from lae_vbr.models.registry import load_codec
from lae_vbr.models.state_dict import CheckpointError, copy_matching_weights

SPECS = {"tcm": (TCM, "tcm_weights_spec.json"), "tcm_vbr": (TCMVBR, "tcm_vbr_weights_spec.json")}


def _spec(shared: Path, name: str) -> dict:
    folder = require_shared("fixtures/seed_reference") / "fixtures" / "seed_reference"
    return json.loads((folder / SPECS[name][1]).read_text())


@cache
def _random_reference_state(cls: type, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the reference layout with random float weights (cached: read-only)."""
    gen = torch.Generator().manual_seed(seed)
    model = cls(N=64)
    if isinstance(model, TCMVBR):
        randomize_lae(model.modnet_ga, seed=seed)
        randomize_lae(model.modnet_gs, seed=seed + 1)
    state = model.state_dict()
    for key, value in state.items():
        if value.is_floating_point() and value.numel() > 1 and "quantiles" not in key:
            state[key] = value + 0.01 * torch.randn(value.shape, generator=gen)
    return state


@pytest.mark.parametrize("name", ["tcm", "tcm_vbr"])
def test_state_dict_keys_and_shapes_match_reference(shared: Path, name: str) -> None:
    spec = _spec(shared, name)
    cls = SPECS[name][0]
    ours = cls(N=64).state_dict()
    assert set(ours) == set(spec)
    wrong = {k: (list(ours[k].shape), v["shape"]) for k, v in spec.items()}
    wrong = {k: s for k, s in wrong.items() if s[0] != s[1]}
    assert wrong == {}


def _old_compressai_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        for new, old in (("matrices", "_matrix"), ("biases", "_bias"), ("factors", "_factor")):
            key = key.replace(f"entropy_bottleneck.{new}.", f"entropy_bottleneck.{old}")
        renamed[key] = value
    return renamed


@pytest.mark.parametrize("cls", [TCM, TCMVBR])
@pytest.mark.parametrize("layout", ["plain", "wrapped", "data_parallel", "old_names", "updated"])
def test_reference_checkpoints_load_unchanged(tmp_path: Path, cls: type, layout: str) -> None:
    state = _random_reference_state(cls)
    expected = cls(N=64)
    expected.load_state_dict(state)
    if layout == "updated":  # CDF tables built, as in released checkpoints
        expected.update(force=True)
        state = expected.state_dict()
    obj: object = state
    if layout == "wrapped":
        obj = {"state_dict": state, "epoch": 3}
    elif layout == "data_parallel":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif layout == "old_names":
        obj = {"state_dict": _old_compressai_names(state)}
    path = tmp_path / "reference.pth.tar"
    torch.save(obj, path)

    loaded = load_codec(path)
    assert loaded.variable_rate == (cls is TCMVBR)
    got = loaded.model.state_dict()
    want = expected.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_fixed_rate_checkpoint_initialises_vbr_at_identity() -> None:
    fixed = TCM(N=64).eval()
    fixed.load_state_dict(_random_reference_state(TCM))
    vbr = TCMVBR(N=64).eval()
    copied, skipped = copy_matching_weights(vbr, fixed.state_dict())
    assert skipped == []
    assert len(copied) == len(fixed.state_dict())
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        want = fixed(x)["x_hat"]
        for lmbda in (0.0, 5.0):
            assert torch.equal(vbr(x, lmbda)["x_hat"], want)


def test_unusable_checkpoints_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_codec(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_codec(garbage)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="not a TCM state dict"):
        load_codec(other)
