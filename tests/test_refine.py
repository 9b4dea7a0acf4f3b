"""Encoder-side latent refinement (DLM) and ``lae-vbr compress --refine-steps``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import tiny_cfg, tiny_codec_with_laes, tiny_tcm, write_noisy_ramp
from lae_vbr.cli import main
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.errors import RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.rate_control import encode_to_bpp
from lae_vbr.codec.refine import (
    KODAK_PIXELS,
    RefineSchedule,
    _descend,
    _directions,
    _frozen,
    native_bfloat16,
    refine_encode,
    refinement_loss,
)
from lae_vbr.models.entropy import bottleneck_likelihood, ste_round
from lae_vbr.models.rate import value_of_index as index_to_lmbda
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, LoadedCodec, save_codec_bundle

STEPS = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refine")
    cfg, vbr = tiny_codec_with_laes(0.5)
    fixed_cfg = tiny_cfg(lae={"enabled": False})
    fixed_cfg["lmbda"]["values"] = [0.013]
    write_noisy_ramp(root / "img.png", 80, 96, noise=20, seed=1)
    return {
        "vbr": save_codec_bundle(root / "vbr.pt", vbr, cfg),
        "fixed": save_codec_bundle(root / "fixed.pt", tiny_tcm(), fixed_cfg),
        "image": root / "img.png",
    }


@pytest.fixture(scope="module")
def codec(files: dict[str, Path]) -> ImageCodec:
    return ImageCodec.load(files["vbr"])


@pytest.fixture(scope="module")
def image(files: dict[str, Path]) -> torch.Tensor:
    return read_image(files["image"])


def _real_loss(codec: ImageCodec, stream, x: torch.Tensor, lmbda: float) -> float:
    """bpp of the y+z streams + 255²·λ·MSE of what the normal decoder reconstructs."""
    x_hat = codec.decode(stream)
    bits = 8 * (len(stream.y_string) + len(stream.z_string))
    return bits / (x.shape[-2] * x.shape[-1]) + 255**2 * lmbda * float((x_hat - x).pow(2).mean())


def test_zero_steps_is_the_plain_encoder(codec, image) -> None:
    plain = codec.encode(image, 2.0)  # first, under inference mode (cached attention masks)
    stream, result = refine_encode(codec, image, 2.0, RefineSchedule(steps=0))
    assert stream.to_bytes() == plain.to_bytes()
    assert len(result.losses) == 1 and result.best_step == 0


@pytest.mark.parametrize("schedule", ["float32", "bfloat16", "reference"])
@pytest.mark.parametrize("idx", [1.5, 4.0])
def test_refinement_lowers_the_real_rd_loss_and_decodes(
    codec, image, idx: float, schedule: str
) -> None:
    lmbda = index_to_lmbda(codec.lmbdas, idx)
    before = {k: v.clone() for k, v in codec.model.state_dict().items()}
    flags = [p.requires_grad for p in codec.model.parameters()]
    plain = codec.encode(image, idx)
    if schedule == "reference":
        chosen = RefineSchedule.reference(STEPS)
    else:  # the default's own step count: its long first steps can overshoot on this model
        chosen = RefineSchedule(precision=schedule)
    stream, result = refine_encode(codec, image, idx, chosen)
    assert stream.lmbda_idx == pytest.approx(idx) and stream.to_bytes() != plain.to_bytes()
    assert min(result.losses) < result.losses[0] and result.best_step > 0
    assert len(result.losses) <= chosen.steps + 1
    assert _real_loss(codec, stream, image, lmbda) < _real_loss(codec, plain, image, lmbda)
    # the weights and their gradients are untouched, and the plain encoder still codes as before
    after = codec.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in codec.model.parameters())
    assert [p.requires_grad for p in codec.model.parameters()] == flags  # unfrozen again
    assert codec.encode(image, idx).to_bytes() == plain.to_bytes()


def test_straight_through_likelihoods_pass_gradients() -> None:
    bottleneck = tiny_tcm().eval().latent_codec.entropy_bottleneck
    z = torch.randn(1, 32, 2, 2, requires_grad=True)
    plain_values, plain = bottleneck(z)
    (plain_grad,) = torch.autograd.grad(-plain.log2().sum(), z)
    offset = bottleneck._get_medians()
    values = ste_round(z - offset) + offset
    likelihood = bottleneck_likelihood(bottleneck, values)
    (grad,) = torch.autograd.grad(-likelihood.log2().sum(), z)
    assert torch.equal(values, plain_values) and torch.equal(likelihood, plain)  # same values
    assert plain_grad.abs().sum() == 0 and grad.abs().sum() > 0  # rounding blocked it before


def test_fixed_rate_models_refine_with_their_trained_lambda(files, image) -> None:
    codec = ImageCodec.load(files["fixed"])
    stream, result = refine_encode(codec, image, None, RefineSchedule(steps=2))
    assert stream.lmbda_idx is None and codec.decode(stream).shape == image.shape
    assert min(result.losses) <= result.losses[0]
    # as loaded from a reference state dict: no config, so no record of the trained λ
    reference = ImageCodec(LoadedCodec(tiny_tcm(), list(PAPER_MSE_LMBDAS), "ref", {}))
    with pytest.raises(RateError, match="does not record the λ"):
        refine_encode(reference, image, None)
    refine_encode(reference, image, None, RefineSchedule(steps=1), lmbda=0.013)


def test_bad_rates_are_rejected(codec, image) -> None:
    with pytest.raises(RateError, match="outside the trained range"):
        refine_encode(codec, image, 5.5)
    with pytest.raises(RateError, match="λ index required"):
        refine_encode(codec, image, None)
    with pytest.raises(ValueError, match="steps must be ≥ 0"):
        RefineSchedule(steps=-1)
    bad_values = ({"momentum": 1.0}, {"backoff": 0.0}, {"normalize": 0.0}, {"precision": "fp8"})
    for bad in bad_values:
        with pytest.raises(ValueError):
            RefineSchedule(**bad)


@pytest.mark.filterwarnings("ignore::lae_vbr.codec.rate_control.RateControlWarning")
def test_rate_control_codes_refined_files(codec, image) -> None:
    schedule = RefineSchedule(steps=2)
    target = refine_encode(codec, image, 3.0, schedule)[0].bpp
    result = encode_to_bpp(codec, image, target, refine=schedule)
    assert result.encodes <= 2
    # the attempts were coded with refinement: the same file as refining at that index
    twin, _ = refine_encode(codec, image, result.lmbda_idx, schedule)
    assert result.stream.to_bytes() == twin.to_bytes()
    assert codec.decode(result.stream).shape == image.shape


def test_cli_refine_steps(files, tmp_path, capsys) -> None:
    out = tmp_path / "r.lae"
    common = ["--checkpoint", str(files["vbr"])]
    assert (
        main(
            [
                "compress",
                str(files["image"]),
                str(out),
                "--quality",
                "2",
                "--refine-steps",
                "2",
                *common,
            ]
        )
        == 0
    )
    assert "latents refined (2 steps)" in capsys.readouterr().out
    assert read_bitstream(out).lmbda_idx == 2.0
    assert main(["decompress", str(out), str(tmp_path / "r.png"), *common]) == 0
    assert (
        main(
            [
                "compress",
                str(files["image"]),
                str(out),
                "--quality",
                "2",
                "--refine-steps",
                "-1",
                *common,
            ]
        )
        == 2
    )
    assert "must be 0 or more" in capsys.readouterr().err


# -- the optimiser on a known loss ----------------------------------------------------------------
def _quadratic(target_y: torch.Tensor, target_z: torch.Tensor, calls: list[tuple]):
    """½‖y − a‖² + ½‖z − b‖² (gradient: y − a, z − b); records each call's y and whether it
    had a graph."""

    def loss_at(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        calls.append((torch.is_grad_enabled() and y.requires_grad, y.detach().clone()))
        return 0.5 * ((y - target_y).pow(2).sum() + (z - target_z).pow(2).sum())

    return loss_at


def test_reference_schedule_is_plain_sgd_with_decay_and_halving() -> None:
    """The reference's iterates, written out: y ← y − lr·∇, lr × 0.99 per step."""
    schedule = RefineSchedule.reference(steps=3)
    assert (schedule.lr, schedule.decay, schedule.backoff, schedule.min_change) == (
        800.0, 0.99, 0.5, 1e-5,
    )  # fmt: skip
    assert schedule.normalize is None and schedule.momentum == 0
    assert schedule.step_size(2 * KODAK_PIXELS) == 1600.0  # scaled with the image size
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5])
    calls: list[tuple] = []
    result = _descend(_quadratic(a, b, calls), torch.zeros(2), torch.zeros(1), schedule, 0.3)
    y, z, lr, expected = torch.zeros(2), torch.zeros(1), 0.3, []
    for _ in range(4):
        expected.append(float(0.5 * ((y - a).pow(2).sum() + (z - b).pow(2).sum())))
        y, z, lr = y - lr * (y - a), z - lr * (z - b), lr * 0.99
    assert result.losses == pytest.approx(expected)
    assert [c[0] for c in calls] == [True, True, True, False]  # the last one: without a graph
    assert result.best_step == 3 and not result.y.requires_grad


@pytest.mark.parametrize("midpoint", [True, False])
def test_a_rise_halves_the_step_and_restarts_from_the_midpoint(midpoint: bool) -> None:
    """A first step 2.5× too long overshoots (the loss rises): the step is halved and, with
    ``midpoint_on_rise``, the next one starts from the midpoint of the two iterates with the
    mean of their gradients (the midpoint's gradient on a quadratic); without, from the worse
    iterate (the reference's rule)."""
    schedule = RefineSchedule(2, 2.5, 1.0, precision="float32", midpoint_on_rise=midpoint)
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5])
    calls: list[tuple] = []
    result = _descend(_quadratic(a, b, calls), torch.zeros(2), torch.zeros(1), schedule, 2.5)
    # y₀ = 0, y₁ = 2.5·a (the loss rises from ½‖a‖² to ½·1.5²‖a‖²); lr → 1.25
    start = 1.25 if midpoint else 2.5  # the midpoint 1.25·a, gradient 0.25·a; or y₁, 1.5·a
    reached = start - 1.25 * (start - 1.0)  # y₂ = reached·a, z₂ = reached·b
    assert torch.allclose(calls[2][1], reached * a)
    norm = float(a.pow(2).sum() + b.pow(2).sum())
    expected = [0.5 * norm, 0.5 * 1.5**2 * norm, 0.5 * (1 - reached) ** 2 * norm]
    assert result.losses == pytest.approx(expected) and result.best_step == 2
    # the midpoint lands 0.0625·a short of the minimum, the worse iterate's step 0.375·a
    assert (1 - reached) == pytest.approx(0.0625 if midpoint else 0.375)


def test_default_schedule_is_the_reference_rule_shortened() -> None:
    """The default: plain SGD like the reference, half the steps, a longer first step that
    decays faster, a midpoint restart after a rise, bfloat16 where native (experiments/dlm)."""
    fast, reference = RefineSchedule(), RefineSchedule.reference()
    assert (fast.normalize, fast.momentum, fast.backoff) == (None, 0.0, reference.backoff)
    assert fast.steps == reference.steps // 2 and fast.lr > reference.lr
    assert fast.decay < reference.decay and fast.min_change == 0.0
    assert fast.midpoint_on_rise and not reference.midpoint_on_rise
    assert fast == RefineSchedule(10, 2000.0, 0.95, 0.0, None, 0.5, 0.0, "auto", True)


def test_normalised_steps_and_nesterov_momentum() -> None:
    """Optional: the first step moves the q-quantile element of |∇| by exactly lr, whatever
    the gradient's scale; momentum adds the previous direction (Nesterov)."""
    schedule = RefineSchedule(steps=1, lr=0.5, momentum=0.0, normalize=0.5)
    for scale in (1e-4, 1e3):
        a = scale * torch.arange(1.0, 5.0)  # gradient at 0: −a; its median magnitude: 2·scale
        calls: list[tuple] = []
        _descend(_quadratic(a, torch.zeros(1), calls), torch.zeros(4), torch.ones(1), schedule, 0.5)
        assert torch.allclose(calls[1][1], 0.5 * a / (2 * scale))
    plain = RefineSchedule(momentum=0.5, normalize=None)
    d, v = _directions([torch.tensor([2.0])], [torch.tensor([4.0])], plain)
    assert v == [torch.tensor([0.5 * 4.0 + 2.0])] and d == [torch.tensor([2.0 + 0.5 * 4.0])]


def test_weights_are_unfrozen_after_a_failure(codec, image) -> None:
    flags = [p.requires_grad for p in codec.model.parameters()]
    with pytest.raises(RuntimeError, match="boom"), _frozen(codec.model):
        assert not any(p.requires_grad for p in codec.model.parameters())
        raise RuntimeError("boom")
    assert [p.requires_grad for p in codec.model.parameters()] == flags


def test_bfloat16_where_the_hardware_has_it(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert not RefineSchedule.reference().bfloat16_on(cpu)
    assert RefineSchedule(precision="bfloat16").bfloat16_on(cpu)
    assert not RefineSchedule(precision="float32").bfloat16_on(cpu)
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert native_bfloat16(cpu) is native and RefineSchedule().bfloat16_on(cpu) is native
    assert not native_bfloat16(torch.device("meta"))


def test_the_refinement_loss_in_bfloat16_is_close_to_float32(codec, image) -> None:
    """What "auto" may choose: the same loss within a fraction of a percent."""
    lmbda = index_to_lmbda(codec.lmbdas, 3.0)
    with torch.no_grad():
        y, z, exact = refinement_loss(codec.model, image, lmbda, 3.0)
        _, _, fast = refinement_loss(codec.model, image, lmbda, 3.0, bfloat16=True)
        assert float(fast(y, z)) == pytest.approx(float(exact(y, z)), rel=0.01)
