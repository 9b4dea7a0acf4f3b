"""Arithmetic of the λ-sampled rate-distortion loss."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import tiny_vbr
from lae_vbr.losses import RateDistortionLoss, bits_per_pixel, psnr_from_mse
from lae_vbr.optim import MilestoneFactors

LMBDAS = [0.0025, 0.0035, 0.0067, 0.013, 0.025, 0.05]


def _output(x: torch.Tensor, noise: float) -> dict:
    gen = torch.Generator().manual_seed(1)
    x_hat = x + noise * torch.randn(x.shape, generator=gen)
    y = torch.full((x.shape[0], 4, 2, 2), 0.5)  # 1 bit each
    z = torch.full((x.shape[0], 2, 1, 1), 0.25)  # 2 bits each
    return {"x_hat": x_hat, "likelihoods": {"y": y, "z": z}}


def test_bpp_counts_bits_per_image_pixel() -> None:
    x = torch.rand(2, 3, 8, 4)
    bpp = bits_per_pixel(_output(x, 0.0)["likelihoods"], 8 * 4)
    assert torch.allclose(bpp, torch.full((2,), (16 * 1 + 2 * 2) / 32))


def test_mse_loss_is_batch_mean_of_per_sample_terms() -> None:
    loss = RateDistortionLoss(LMBDAS)
    x = torch.rand(3, 3, 8, 8)
    out = _output(x, 0.05)
    idx = torch.tensor([0.0, 2.0, 5.0])
    terms = loss(out, x, idx)
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    bpp = torch.full((3,), (16 + 4) / 64)
    lam = torch.tensor([LMBDAS[0], LMBDAS[2], LMBDAS[5]])
    expected = (255**2 * lam * mse + bpp).mean()
    assert torch.allclose(terms["loss"], expected)
    assert torch.allclose(terms["psnr"], -10 * torch.log10(mse))
    assert torch.allclose(terms["bpp"], bpp)


def test_lambda_weight_power_weights_samples_about_the_geometric_mean() -> None:
    x = torch.rand(3, 3, 8, 8)
    out = _output(x, 0.05)
    idx = torch.tensor([0.0, 2.0, 5.0])
    plain = RateDistortionLoss(LMBDAS)(out, x, idx)
    weighted = RateDistortionLoss(LMBDAS, lmbda_weight_power=0.5)(out, x, idx)
    lam = torch.tensor([LMBDAS[0], LMBDAS[2], LMBDAS[5]])
    mean = math.exp(sum(math.log(v) for v in LMBDAS) / len(LMBDAS))
    expected = (plain["per_sample_loss"] * (lam / mean) ** -0.5).mean()
    assert torch.allclose(weighted["loss"], expected)
    assert not torch.allclose(weighted["loss"], plain["loss"])
    # the per-sample terms and metrics are those of the plain loss
    assert torch.equal(weighted["per_sample_loss"], plain["per_sample_loss"])
    with pytest.raises(ValueError, match="lmbda_weight_power"):
        RateDistortionLoss(LMBDAS, lmbda_weight_power=float("nan"))


def test_msssim_loss_uses_its_own_lambdas() -> None:
    loss = RateDistortionLoss([3, 5, 8, 16, 36, 64], distortion="ms-ssim")
    x = torch.rand(2, 3, 192, 192)
    out = _output(x, 0.02)
    terms = loss(out, x, torch.tensor([0.0, 5.0]))
    expected = (torch.tensor([3.0, 64.0]) * (1 - terms["ms_ssim"]) + terms["bpp"]).mean()
    assert torch.allclose(terms["loss"], expected)
    assert (terms["ms_ssim"] > 0.5).all()
    with pytest.raises(ValueError, match="at least 176"):
        loss(_output(x[..., :64, :64], 0.0), x[..., :64, :64], torch.tensor([0.0, 1.0]))


def test_lambda_sampling_is_uniform_over_the_set() -> None:
    loss = RateDistortionLoss(LMBDAS)
    idx = loss.sample_indices(6000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(idx.long(), minlength=6)
    assert set(idx.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    assert counts.min() > 900 and counts.max() < 1100


def test_fractional_index_interpolates_lambda_log_linearly() -> None:
    loss = RateDistortionLoss(LMBDAS)
    got = loss.lmbda_values(torch.tensor([0.0, 2.5, 5.0]))
    mid = math.exp((math.log(LMBDAS[2]) + math.log(LMBDAS[3])) / 2)
    assert torch.allclose(got, torch.tensor([LMBDAS[0], mid, LMBDAS[5]]))


def test_fixed_rate_loss_needs_no_index_and_rejects_bad_sets() -> None:
    loss = RateDistortionLoss([0.013])
    x = torch.rand(2, 3, 8, 8)
    assert torch.isfinite(loss(_output(x, 0.1), x)["loss"])
    with pytest.raises(ValueError, match="required"):
        RateDistortionLoss(LMBDAS)(_output(x, 0.1), x)
    with pytest.raises(ValueError, match="positive"):
        RateDistortionLoss([0.01, -1.0])
    with pytest.raises(ValueError, match="distortion"):
        RateDistortionLoss(LMBDAS, distortion="l1")


def test_psnr_and_milestone_schedule() -> None:
    assert torch.allclose(psnr_from_mse(torch.tensor(1e-2)), torch.tensor(20.0))
    schedule = MilestoneFactors([50, 100, 150], [0.5, 0.1, 0.05])
    assert [schedule(e) for e in (0, 49, 50, 99, 100, 150, 400)] == [
        1,
        1,
        0.5,
        0.5,
        0.1,
        0.05,
        0.05,
    ]
    with pytest.raises(ValueError):
        MilestoneFactors([100, 50], [0.5, 0.1])


def test_optimisers_from_partial_configs_with_parameter_groups() -> None:
    from lae_vbr.config import ConfigError
    from lae_vbr.optim import build_optimizers

    model = tiny_vbr()
    cfg = {
        "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2e-4},
        "aux_optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        "param_groups": {"modnet_": {"lr": 1e-3}},
        "scheduler": {"milestones": [2], "factors": [0.5]},
    }
    (opt, aux), (sched,) = build_optimizers(model, cfg)
    assert sched.lr_lambdas[0](2) == 0.5 and sched.lr_lambdas[0](1) == 1.0
    assert isinstance(opt, torch.optim.AdamW) and isinstance(aux, torch.optim.Adam)
    lae_ids = {id(p) for n, p in model.named_parameters() if n.startswith("modnet_")}
    first, rest = opt.param_groups
    assert first["lr"] == 1e-3 and {id(p) for p in first["params"]} <= lae_ids
    assert rest["lr"] == 2e-4 and not {id(p) for p in rest["params"]} & lae_ids
    quantiles = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    assert [id(p) for p in aux.param_groups[0]["params"]] == [id(p) for p in quantiles]
    with pytest.raises(ConfigError, match=r"optim\.optimizer\.lr"):
        build_optimizers(model, {"lr": 1e-4})
    with pytest.raises(ConfigError, match="no trainable parameter starts with 'nope'"):
        build_optimizers(model, {"param_groups": {"nope": {"lr": 1.0}}})
