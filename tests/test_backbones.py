"""The LAE around CompressAI backbones, the LAE ablations, and the gain-based peer baseline."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from compressai.registry import MODELS
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from helpers import tiny_tcm, write_noisy_ramp
from lae_vbr.cli import main
from lae_vbr.codec.errors import RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.rate_control import encode_to_bpp
from lae_vbr.codec.rate_model import RateModel
from lae_vbr.codec.refine import RefineSchedule, refine_encode
from lae_vbr.config import register_resolvers
from lae_vbr.models import CompressAIBackbone, GainVariableRate, VariableRateCodec
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, build_codec, load_codec, save_codec_bundle
from lae_vbr.paths import REPO_ROOT

register_resolvers()

#: Narrow versions of conf/model/backbone/{bmshj2018_hyperprior,mbt2018_mean,cheng2020_anchor}.
TINY_BACKBONES = {
    "bmshj2018-hyperprior": {"N": 32, "M": 64},
    "mbt2018-mean": {"N": 32, "M": 64},
    "cheng2020-anchor": {"N": 64},
}
LAE = partial(VariableRateCodec)
GAIN = partial(GainVariableRate.around, lmbdas=list(PAPER_MSE_LMBDAS))
#: The same methods as stored by checkpoints written before the model/rate group.
LEGACY_LAE = {"enabled": True}


def _backbone_cfg(arch: str) -> dict:
    return {"_target_": "lae_vbr.models.CompressAIBackbone", "architecture": arch,
            **TINY_BACKBONES[arch]}  # fmt: skip


def _codec_cfg(arch: str, lae: dict | None) -> dict:
    model = {"_target_": "lae_vbr.models.registry.build_codec", "backbone": _backbone_cfg(arch)}
    model |= {"lae": lae or {"enabled": False}, "num_lmbdas": len(PAPER_MSE_LMBDAS)}
    values = list(PAPER_MSE_LMBDAS) if lae else [0.05]
    return {"model": model, "lmbda": {"values": values}, "run_name": f"{arch}-test"}


@pytest.mark.parametrize("arch", sorted(TINY_BACKBONES))
@pytest.mark.parametrize("rate", ["fixed", "lae"])
def test_backbone_codes_any_size_through_a_checkpoint(tmp_path: Path, arch: str, rate: str) -> None:
    """Config-driven checkpoint → load_codec → file-format coding of an odd-sized image."""
    torch.manual_seed(0)
    cfg = _codec_cfg(arch, LEGACY_LAE if rate == "lae" else None)
    path = save_codec_bundle(tmp_path / "codec.pt", instantiate(cfg["model"]), cfg)
    loaded = load_codec(path)
    assert loaded.variable_rate == (rate == "lae")
    codec = ImageCodec(loaded)
    x = torch.rand(1, 3, 37, 70)
    idx = 2.5 if rate == "lae" else None
    stream = codec.encode(x, idx)
    x_hat = codec.decode(stream)
    assert (stream.height, stream.width) == (37, 70)
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()
    if arch != "cheng2020-anchor":  # CompressAI's context-model forward rounds differently
        with torch.inference_mode():
            fwd = loaded.model(x, *(() if idx is None else (idx,)))["x_hat"].clamp(0, 1)
        assert torch.allclose(x_hat, fwd, atol=1e-5)


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean"])
def test_wrapper_keeps_compressai_keys_and_outputs(arch: str) -> None:
    torch.manual_seed(0)
    plain = MODELS[arch](**TINY_BACKBONES[arch]).eval()
    wrapped = CompressAIBackbone(arch, **TINY_BACKBONES[arch]).eval()
    wrapped.load_state_dict(plain.state_dict())
    assert set(wrapped.state_dict()) == set(plain.state_dict())
    x = torch.rand(1, 3, 128, 64)  # a multiple of 64: no padding, the very same computation
    with torch.inference_mode():
        assert torch.equal(wrapped(x)["x_hat"], plain(x)["x_hat"])
    vbr = build_codec(CompressAIBackbone(arch, **TINY_BACKBONES[arch]), LAE)
    assert {k for k in vbr.state_dict() if not k.startswith("modnet_")} == set(plain.state_dict())


@pytest.mark.parametrize("arch", sorted(TINY_BACKBONES))
def test_recomputed_hyper_synthesis_gives_the_same_gradients(arch: str, monkeypatch) -> None:
    """Latent refinement of large images recomputes h_s in the backward pass: the same rate
    and gradients as keeping its intermediates."""
    torch.manual_seed(0)
    codec = CompressAIBackbone(arch, **TINY_BACKBONES[arch]).eval().latent_codec
    codec.requires_grad_(False)
    y0 = 4 * torch.randn(1, codec.h_a[0].in_channels, 8, 8)

    def rate_and_gradients(recompute: bool) -> tuple[torch.Tensor, ...]:
        y = y0.clone().requires_grad_(True)
        z = codec.hyper_analysis(y).detach().requires_grad_(True)
        out = codec(y, z, straight_through=True, recompute=recompute)
        rate = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
        rate = rate + out["y_hat"].square().sum()
        return (rate.detach(), *torch.autograd.grad(rate, (y, z)))

    kept = rate_and_gradients(False)
    calls: list[bool] = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        "lae_vbr.models.entropy.checkpoint", lambda *a, **k: calls.append(True) or real(*a, **k)
    )
    recomputed = rate_and_gradients(True)
    assert calls == [True] and kept[1].abs().sum() > 0
    for a, b in zip(kept, recomputed, strict=True):
        assert torch.equal(a, b)


def test_lae_changes_the_rate_of_a_compressai_backbone() -> None:
    torch.manual_seed(0)
    model = build_codec(CompressAIBackbone("mbt2018-mean", N=32, M=64), LAE).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(20)  # latents of a few quantisation steps
        emb = model.modnet_ga.mask.lmd_map
        emb.fc_layers[0].weight.fill_(1.0)
        emb.fc_layers[0].bias.zero_()
        emb.fc_layers[1].weight.fill_(0.05)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        bits = [float(sum(-v.log2().sum() for v in model(x, i)["likelihoods"].values()))
                for i in (0.0, 5.0)]  # fmt: skip
    assert bits[0] < bits[1]


@pytest.mark.parametrize(
    ("option", "encoder", "decoder", "context_trains"),
    [("lae", True, True, True), ("lae_no_context", True, True, False),
     ("lae_encoder_only", True, False, True), ("fixed", False, False, False)],
)  # fmt: skip
def test_lae_ablation_options(option: str, encoder: bool, decoder: bool, context_trains: bool):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        overrides = ["model/backbone=tcm_tiny", f"model/rate={option}"]
        if option == "fixed":
            overrides.append("lmbda=single")
        cfg = compose("train", overrides=overrides)
    model = instantiate(cfg.model)
    assert isinstance(model, VariableRateCodec) == (option != "fixed")
    assert model.variable_rate == (option != "fixed")
    if option == "fixed":
        return
    assert (model.modnet_ga is not None, model.modnet_gs is not None) == (encoder, decoder)
    branch = model.modnet_ga.mask
    assert all(p.requires_grad == context_trains for p in branch.latent_attn.parameters())
    assert branch.alpha.requires_grad == context_trains


def test_gain_peer_uses_the_same_lambda_index_interface() -> None:
    torch.manual_seed(0)
    model = build_codec(CompressAIBackbone("mbt2018-mean", N=32, M=64), GAIN)
    assert isinstance(model, GainVariableRate)
    assert model.architecture == "mbt2018-mean-vbr"
    gains = model.model.Gain
    assert not gains.requires_grad
    assert torch.allclose(gains, (torch.tensor(PAPER_MSE_LMBDAS) / 0.05).sqrt())
    with torch.no_grad():
        model.model.g_a[-1].weight.mul_(20)  # latents of a few quantisation steps
    model.eval()
    model.update()
    x = torch.rand(3, 3, 40, 72)
    idx = torch.tensor([5.0, 0.0, 2.5])
    with torch.inference_mode():
        batch = model(x, idx)
        singles = [model(x[i : i + 1], idx[i]) for i in range(3)]
        enc = model.compress(x, idx)
        dec = model.decompress(enc["strings"], enc["shape"], idx)
    for i, single in enumerate(singles):
        assert torch.allclose(batch["x_hat"][i], single["x_hat"][0], atol=1e-6)
    assert torch.allclose(dec["x_hat"], batch["x_hat"].clamp(0, 1), atol=1e-5)
    sizes = [len(enc["strings"][0][i]) for i in range(3)]
    assert sizes[1] < sizes[2] < sizes[0]  # λ index 0 < 2.5 < 5 in rate


def test_gain_peer_exists_only_for_compressai_vbr_models() -> None:
    with pytest.raises(ValueError, match="gain baseline exists for CompressAI's"):
        build_codec(tiny_tcm(), GAIN)
    with pytest.raises(ValueError, match="gain baseline exists"):
        build_codec(CompressAIBackbone("cheng2020-anchor", N=64), GAIN)


def test_backbone_configs_build_and_pad_to_64() -> None:
    for name in ("bmshj2018_hyperprior", "mbt2018_mean", "cheng2020_anchor"):
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"model/backbone={name}"])
        assert cfg.model.backbone._target_ == "lae_vbr.models.CompressAIBackbone"
        backbone = instantiate(cfg.model.backbone)
        assert backbone.pad_multiple == 64 and backbone.M in (192, 320)


@pytest.fixture(scope="module")
def mbt_lae_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CompressAI backbone with LAEs, saved as a project checkpoint would be."""
    torch.manual_seed(0)
    cfg = _codec_cfg("mbt2018-mean", LEGACY_LAE)
    model = instantiate(cfg["model"])
    with torch.no_grad():
        model.g_a[-1].weight.mul_(20)  # latents of a few quantisation steps
        emb = model.modnet_ga.mask.lmd_map
        emb.fc_layers[0].weight.fill_(1.0)
        emb.fc_layers[1].weight.fill_(0.05)
    return save_codec_bundle(tmp_path_factory.mktemp("mbt") / "mbt.pt", model, cfg)


@pytest.mark.filterwarnings("ignore::lae_vbr.codec.rate_control.RateControlWarning")
def test_refinement_and_rate_control_work_on_a_compressai_backbone(mbt_lae_bundle, tmp_path):
    """The composed data path gives DLM and the R-λ model to every LAE model, not just TCM."""
    codec = ImageCodec.load(mbt_lae_bundle)
    x = torch.rand(1, 3, 48, 80)
    plain = codec.encode(x, 3.0)
    refined, result = refine_encode(codec, x, 3.0, RefineSchedule(steps=2))
    assert min(result.losses) <= result.losses[0]
    assert codec.decode(refined).shape == x.shape and refined.lmbda_idx == plain.lmbda_idx
    sums = RateModel(codec.model, x).log2_mask_sum([0.0, 5.0])
    assert sums[0] < sums[1]
    result = encode_to_bpp(codec, x, plain.bpp)
    assert result.encodes <= 2 and codec.decode(result.stream).shape == x.shape


def test_cli_refines_with_a_compressai_backbone(mbt_lae_bundle, tmp_path, capsys) -> None:
    image = tmp_path / "in.png"
    write_noisy_ramp(image, 40, 72, noise=20, seed=2)
    out = tmp_path / "out.lae"
    common = ["--checkpoint", str(mbt_lae_bundle)]
    args = ["compress", str(image), str(out), "--quality", "2", "--refine-steps", "2"]
    code = main([*args, *common])
    assert code == 0, capsys.readouterr().err
    assert main(["decompress", str(out), str(tmp_path / "out.png"), *common]) == 0


def test_gain_peer_refuses_refinement_and_the_rate_model(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = {"model": {"_target_": "lae_vbr.models.registry.build_codec",
                     "backbone": _backbone_cfg("mbt2018-mean"), "num_lmbdas": 6,
                     "lae": {"enabled": True, "method": "gain",
                             "lmbdas": list(PAPER_MSE_LMBDAS)}},
           "lmbda": {"values": list(PAPER_MSE_LMBDAS)}, "run_name": "gain"}  # fmt: skip
    path = save_codec_bundle(tmp_path / "gain.pt", instantiate(cfg["model"]), cfg)
    codec = ImageCodec.load(path)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(RateError, match="latent refinement needs a model built as"):
        refine_encode(codec, x, 2.0, RefineSchedule(steps=1))
    with pytest.raises(RateError, match="needs a variable-rate model with an encoder-side LAE"):
        RateModel(codec.model, x)
