"""Checkpoints that name models: the codec description every checkpoint and bundle carries,
read without torch, built through CompressAI's registry; files written before it (the Hydra
config alone, or the older ``model.lae`` group) still load to the same model."""

from __future__ import annotations

import subprocess
import sys

import hydra
import pytest
import torch

from helpers import tiny_cfg
from lae_vbr.codec.digest import weights_digest
from lae_vbr.codec.peek import peek_rate_axis
from lae_vbr.description import CodecDescription, DescriptionError
from lae_vbr.models.registry import load_codec, save_codec_bundle

RATES = {
    "lae": tiny_cfg(),
    "fixed": {**tiny_cfg(lae={"enabled": False}), "lmbda": {"values": [0.05]}},
    "no_context": tiny_cfg(lae={"enabled": True, "contextual": False}),
}


@pytest.mark.parametrize("kind", sorted(RATES))
def test_a_bundle_names_its_codec_and_loads_without_hydra(tmp_path, kind) -> None:
    cfg = RATES[kind]
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg["model"])
    path = save_codec_bundle(tmp_path / "codec.pt", model, cfg)
    stored = torch.load(path, weights_only=True)["codec"]
    assert stored["format"] == 1 and stored["backbone"] == "tcm"
    assert "_target_" not in str(stored)  # names, not import paths
    description = CodecDescription.from_dict(stored)
    assert description.rate == {"lae": "lae", "no_context": "lae", "fixed": "fixed"}[kind]
    loaded = load_codec(path)
    assert type(loaded.model) is type(model) and weights_digest(loaded.model) == weights_digest(
        model
    )
    assert peek_rate_axis(path, "codec").variable == (kind != "fixed")
    code = (
        "import sys\n"
        "from lae_vbr.models.registry import load_codec\n"
        f"load_codec({str(path)!r})\n"
        "print('hydra' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_a_file_written_before_the_description_loads_to_the_same_model(tmp_path) -> None:
    cfg = tiny_cfg(lae={"enabled": True, "decoder": False})  # the older model.lae group
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg["model"])
    old = tmp_path / "old.pt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"cfg": cfg}}, old)
    loaded = load_codec(old)
    assert loaded.model.modnet_gs is None and loaded.model.modnet_ga is not None
    assert weights_digest(loaded.model) == weights_digest(model)
    assert CodecDescription.from_config(cfg).rate_args["decoder_lae"] is False


def test_a_newer_or_broken_description_is_refused_by_name() -> None:
    base = CodecDescription.from_config(tiny_cfg()).to_dict()
    with pytest.raises(DescriptionError, match="format 2; this lae-vbr reads format 1"):
        CodecDescription.from_dict({**base, "format": 2})
    with pytest.raises(DescriptionError, match="malformed"):
        CodecDescription.from_dict({"format": 1})
    with pytest.raises(DescriptionError, match="unknown rate method"):
        CodecDescription.from_dict({**base, "rate": "magic"})
    with pytest.raises(DescriptionError, match="unknown model part"):
        CodecDescription.from_config({**tiny_cfg(), "model": {"backbone": {"_target_": "x.Y"}}})
