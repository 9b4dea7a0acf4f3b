"""Model behaviour: the LAE, any image size, coding round trips, λ handling."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch

from helpers import TINY_TCM, randomize_lae, tiny_tcm, tiny_vbr
from lae_vbr.models import LAE, TCMVBR, ComposedCodec, RateError, VariableRateCodec
from lae_vbr.models.latent_codec import converted_copy
from lae_vbr.models.registry import build_codec


def test_lae_is_identity_at_init() -> None:
    lae = LAE(64)
    y = torch.randn(2, 64, 8, 8)
    for lmbda in (0.0, 2.5, 5.0):
        out, mask = lae(y, torch.full((2, 1), lmbda))
        assert torch.equal(out, y)
        assert torch.equal(mask, torch.ones_like(mask))


def test_lae_mask_stays_in_open_interval() -> None:
    lae = LAE(64)
    with torch.no_grad():
        lae.mask.lmd_map.fc_layers[-1].weight.normal_(0, 50.0)
        lae.mask.alpha.fill_(30.0)
    y = torch.randn(3, 64, 8, 8) * 100
    _, mask = lae(y, torch.tensor([[0.0], [2.0], [5.0]]))
    assert mask.min() > math.exp(-1)
    assert mask.max() < math.exp(1)
    assert not torch.equal(mask, torch.ones_like(mask))


def test_lae_without_context_ignores_content() -> None:
    lae = LAE(64, contextual=False)
    randomize_lae(lae)
    assert not lae.mask.alpha.requires_grad
    a = lae.log_mask(torch.randn(1, 64, 8, 8), torch.tensor([[3.0]]))
    b = lae.log_mask(torch.randn(1, 64, 8, 8), torch.tensor([[3.0]]))
    assert torch.equal(a, b)


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (128, 128), (130, 257)])
def test_any_image_size_round_trips(size: tuple[int, int]) -> None:
    model = tiny_vbr().eval()
    model.update()
    x = torch.rand(1, 3, *size)
    with torch.inference_mode():
        fwd = model(x, 2.5)
        enc = model.compress(x, 2.5)
        dec = model.decompress(enc["strings"], enc["shape"], 2.5)
    assert fwd["x_hat"].shape == x.shape
    assert dec["x_hat"].shape == x.shape
    # eval-mode forward quantises exactly as the coder does
    assert torch.allclose(dec["x_hat"], fwd["x_hat"].clamp(0, 1), atol=1e-4)


def test_batch_compress_equals_single() -> None:
    model = tiny_vbr().eval()
    model.update()
    x = torch.rand(2, 3, 128, 128)
    with torch.inference_mode():
        both = model.compress(x, torch.tensor([0.0, 4.0]))
        first = model.compress(x[:1], 0.0)
        second = model.compress(x[1:], 4.0)
        dec = model.decompress(both["strings"], both["shape"], torch.tensor([0.0, 4.0]))
    assert both["strings"][0] == first["strings"][0] + second["strings"][0]
    assert both["strings"][1] == first["strings"][1] + second["strings"][1]
    assert dec["x_hat"].shape == x.shape


def test_lambda_changes_rate_monotonically_when_lae_scales() -> None:
    model = tiny_vbr().eval()
    with torch.no_grad():  # a mask that grows with λ: larger latents cost more bits
        emb = model.modnet_ga.mask.lmd_map
        emb.fc_layers[0].weight.fill_(1.0)
        emb.fc_layers[0].bias.zero_()
        emb.fc_layers[1].weight.fill_(0.01)
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        bits = [
            sum(-torch.log2(v).sum() for v in model(x, lam)["likelihoods"].values()).item()
            for lam in (0.0, 2.5, 5.0)
        ]
        log2m = [model.log2_mask_sum(model.g_a(x), lam).item() for lam in (0.0, 2.5, 5.0)]
    assert bits[0] < bits[1] < bits[2]
    assert log2m[0] < log2m[1] < log2m[2]


@pytest.mark.parametrize("bad", [-0.1, 5.5, float("nan"), float("inf")])
def test_lambda_index_outside_set_is_rejected(bad: float) -> None:
    model = tiny_vbr()
    with pytest.raises(ValueError, match="outside the trained range"):
        model(torch.rand(1, 3, 64, 64), bad)


def test_wrong_number_of_lambdas_is_rejected() -> None:
    with pytest.raises(ValueError, match="3 λ indices for a batch of 2"):
        tiny_vbr()(torch.rand(2, 3, 64, 64), torch.tensor([0.0, 1.0, 2.0]))


def test_single_lambda_vbr_is_rejected() -> None:
    with pytest.raises(RateError, match="at least two λ values"):
        build_codec(tiny_tcm(), partial(VariableRateCodec), num_lmbdas=1)
    with pytest.raises(RateError, match="at least two λ values"):  # a checkpoint's older config
        build_codec(tiny_tcm(), lae={"enabled": True}, num_lmbdas=1)


def test_the_pieces_without_laes_are_the_fixed_rate_model() -> None:
    model = tiny_vbr().eval()
    randomize_lae(model.modnet_ga)
    randomize_lae(model.modnet_gs)
    fixed = ComposedCodec(
        model.g_a, model.latent_codec, model.g_s, model.latent_channels, model.pad_multiple
    ).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        plain = fixed(x)["x_hat"]
        wrapped = model(x, 5.0)["x_hat"]
        again = fixed(x)["x_hat"]
    assert torch.equal(plain, again)
    assert not torch.allclose(plain, wrapped)


def test_no_hooks_and_no_per_call_state() -> None:
    """The data path is written out: no module carries forward hooks, and a call leaves no
    λ or latent behind on the model."""
    model = tiny_vbr().eval()
    before = {k: v for k, v in vars(model).items() if not k.startswith("_")}
    with torch.inference_mode():
        model(torch.rand(1, 3, 64, 64), 2.0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert {k: v for k, v in vars(model).items() if not k.startswith("_")} == before


def test_vbr_state_dict_is_flat_and_reloads() -> None:
    a, b = tiny_vbr(), tiny_vbr()
    randomize_lae(a.modnet_ga)
    sd = a.state_dict()
    assert not any(k.startswith("backbone.") for k in sd)
    assert "g_a.0.conv1.weight" in sd and "modnet_ga.mask.alpha" in sd
    b.load_state_dict(sd)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(a.eval()(x, 3.0)["x_hat"], b.eval()(x, 3.0)["x_hat"])


def test_tcmvbr_class_matches_generic_wrapper() -> None:
    direct = TCMVBR(**{k: v for k, v in TINY_TCM.items() if k != "_target_"})
    assert set(direct.state_dict()) == set(tiny_vbr().state_dict())


def test_converted_copy_is_deepcopy_then_to() -> None:
    """The float64 latent codec of every coding call: deepcopy(...).to(dtype), made faster."""
    model = tiny_tcm().eval()
    model.update(force=True)
    codec = model.latent_codec
    fast = converted_copy(codec, torch.float64)
    slow = copy.deepcopy(codec).to(torch.float64)
    a, b = fast.state_dict(keep_vars=True), slow.state_dict(keep_vars=True)
    assert list(a) == list(b)
    for key, value in a.items():
        assert type(value) is type(b[key]) and value.dtype == b[key].dtype
        assert torch.equal(value, b[key]) and value.requires_grad == b[key].requires_grad
    assert [type(m) for m in fast.modules()] == [type(m) for m in slow.modules()]
    # nothing is shared with the original that it could change through the copy
    storages = {t.untyped_storage().data_ptr() for t in codec.state_dict().values()}
    assert not storages & {t.untyped_storage().data_ptr() for t in a.values()}
    for mine, theirs in zip(fast.modules(), codec.modules(), strict=True):
        assert mine._forward_hooks is not theirs._forward_hooks
        assert mine._modules is not theirs._modules
    assert fast.entropy_bottleneck.entropy_coder is not codec.entropy_bottleneck.entropy_coder
    y = torch.randn(1, TINY_TCM["M"], 4, 4, dtype=torch.float64)
    with torch.inference_mode():
        assert fast.compress(y)["strings"] == slow.compress(y)["strings"]
