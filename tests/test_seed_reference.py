"""Our TCM and TCMVBR against the reference implementation's stored outputs.

``shared/fixtures/seed_reference`` (see its README.md) holds the outputs of the reference
``TCM`` / ``TCM_VBR`` (N=64, M=320) with synthetic weights that are rebuilt here from each key,
so the test pins the whole computation (transforms, slice entropy model, LAEs, entropy coder)
without storing any weights. Float32 sums run in another order than in the reference, so nothing
is bit-exact; the tolerances below were chosen from the maxima measured on CPU (PyTorch 2.15,
CompressAI 1.2.8, one thread) against the reference (PyTorch 2.14.1), with a margin.

Symbol flips. The synthetic latents are large (|y − μ| up to ~20, most y likelihoods at the
1e-9 floor), so a residual y − μ a few ulps from k + ½ rounds the other way after a last-bit
difference. Measured: at λ index 5.0 one y symbol (y − μ = 1.5000004) flips in the forward
pass; at λ index 3.0 about five symbols of the compressed stream differ. A flip changes x_hat by up
to ~0.02 over a ~100×100 pixel region and perturbs the means of later slices, and which symbols
flip depends on the machine. So image comparisons have two tiers: at least half of the pixels
must agree to float32 precision (catches any systematic error) and every pixel must agree to a
bound that a few flips stay under; likelihoods are compared per element with an absolute
tolerance that allows a few outliers, plus the total −log2 likelihood (which sees the 1e-9
floor) relatively. Bitstreams are compared by length (README: within 0.5 %), and decoded images
tightly only when our bitstreams are byte-identical to the reference's.

Tolerances (measured maxima in brackets; "no flip" = TCM and TCMVBR at λ index 0.0 / 2.5):

* x_hat, per pixel: ``X_HAT_ATOL`` = 1e-4 for at least ``X_HAT_MIN_AGREE`` = 50 % of pixels
  (all pixels when no symbol flips) [no flip: 2.7e-5 max; λ 5.0: median 1.7e-5, 85.5 % within
  1e-4], and ``X_HAT_FLIP_ATOL`` = 0.1 for every pixel [λ 5.0: 1.9e-2; decoded λ 3.0: 3.3e-2].
  The project's in-house equivalence study used 1e-5 and 1e-9; across implementations the
  measured TCM differences (2.1e-5 on x_hat, 1.5e-9 on likelihoods) are already above those.
* y likelihoods: ``LIK_Y_ATOL`` = 2e-4 for at least ``LIK_Y_MIN_AGREE`` = 99 % of elements
  [no flip: 3.9e-5 max; λ 5.0: 4.8e-4 max, 37 of 81,920 beyond 1e-4]; Σ −log2 within
  ``BITS_RTOL`` = 1e-4 relative [no flip: 1.6e-8; λ 5.0: 5.7e-6; one flip costs ≤ ~1.4e-5].
* z likelihoods: ``LIK_Z_ATOL`` = 1e-6 everywhere [0 here; 1.8e-7 with h_a in float64; the
  closest z to a rounding boundary is ≥ 100 ulps away, so z does not flip].
* bitstream lengths: ``BITSTREAM_RTOL`` = 0.5 % [0 bytes for y and z of both models].
* decoded x_hat: ``X_HAT_ATOL`` everywhere when our streams are byte-identical [TCM: 1.9e-5];
  otherwise our own stream is decoded and compared with the two-tier image rule [λ 3.0: 3.3e-2
  max, 90.8 % within 1e-4; 68 % of the reference pixels are clamped to 0 or 1].
* mean natural log of the encoder mask at λ index 3.0: ``LOG_MASK_ATOL`` = 1e-8 [2.3e-10; for
  scale, a λ index off by 0.001 moves it by 3.8e-6].
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from helpers import require_shared
from lae_vbr.models import TCM, TCMVBR

X_HAT_ATOL = 1e-4
X_HAT_MIN_AGREE = 0.5
X_HAT_FLIP_ATOL = 0.1
LIK_Y_ATOL = 2e-4
LIK_Y_MIN_AGREE = 0.99
BITS_RTOL = 1e-4
LIK_Z_ATOL = 1e-6
BITSTREAM_RTOL = 5e-3
LOG_MASK_ATOL = 1e-8

VBR_FORWARD_LAMBDAS = (0.0, 2.5, 5.0)
VBR_COMPRESS_LAMBDA = 3.0


def reference_weight(key: str, entry: dict[str, Any]) -> Tensor:
    """One synthetic weight, rebuilt by the rule of ``seed_reference/README.md`` ("fill" mode).

    ``v[i] = sqrt(2)·sin(12.9898·i + (crc32(key) mod 10007))`` in float64, then
    ``mean + max(std, 0.05)·v``, reshaped and cast to float32. The whole chain stays in float64
    until the final cast so that the float32 weights are bit-identical to the reference's.
    """
    shape = entry["shape"]
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    v = np.sqrt(2.0) * np.sin(12.9898 * i + (zlib.crc32(key.encode("utf-8")) % 10007))
    values = entry["mean"] + max(entry["std"], 0.05) * v
    return torch.from_numpy(values.reshape(shape).astype(np.float32))


def build_reference_model(model: nn.Module, spec_path: Path) -> nn.Module:
    """Load the synthetic weights of ``spec_path`` into ``model``; ready for coding, eval mode.

    The spec lists every key of the reference state dict, so matching keys and shapes is itself
    the check that our checkpoint layout is the reference's. "keep" entries (entropy-bottleneck
    quantiles, bounds, pedestals, empty CDF buffers) keep the constructor's value.
    """
    spec: dict[str, dict[str, Any]] = json.loads(spec_path.read_text())
    state = model.state_dict()
    assert sorted(set(state) - set(spec)) == [], "keys we have and the reference has not"
    assert sorted(set(spec) - set(state)) == [], "keys the reference has and we have not"
    wrong_shapes = {
        key: (list(state[key].shape), entry["shape"])
        for key, entry in spec.items()
        if list(state[key].shape) != entry["shape"]
    }
    assert wrong_shapes == {}, "state-dict shapes differ from the reference (ours, reference)"
    for key, entry in spec.items():
        if entry["mode"] == "fill":
            assert state[key].is_floating_point(), f"{key}: filled in the reference, not float"
            state[key] = reference_weight(key, entry)
        else:
            assert entry["mode"] == "keep", f"{key}: unknown mode {entry['mode']!r}"
            assert str(state[key].dtype) == entry["dtype"], f"{key}: dtype differs"
    model.load_state_dict(state)
    model.update(force=True)
    return model.eval()


def assert_images_close(name: str, ours: np.ndarray, ref: np.ndarray, exact: bool) -> None:
    """Two-tier image comparison (module docstring): float32 precision for at least half of the
    pixels (all of them when ``exact``, i.e. no symbol can have flipped), a flip bound for all."""
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    agree = float(np.mean(diff <= X_HAT_ATOL))
    need = 1.0 if exact else X_HAT_MIN_AGREE
    assert agree >= need, (
        f"{name}: {agree:.2%} of pixels within {X_HAT_ATOL:g} (need {need:.0%}); "
        f"max |Δ| {diff.max():.3g}"
    )
    assert diff.max() <= X_HAT_FLIP_ATOL, f"{name}: max |Δ| {diff.max():.3g}"


def assert_likelihoods_close(name: str, out: dict[str, Any], ref: dict[str, np.ndarray]) -> None:
    """y and z likelihoods of a forward pass against the reference's (module docstring)."""
    lik_y = out["likelihoods"]["y"].numpy().astype(np.float64)
    ref_y = ref["lik_y"].astype(np.float64)
    assert lik_y.shape == ref_y.shape, f"{name} lik_y: shape {lik_y.shape} != {ref_y.shape}"
    diff_y = np.abs(lik_y - ref_y)
    agree = float(np.mean(diff_y <= LIK_Y_ATOL))
    assert agree >= LIK_Y_MIN_AGREE, (
        f"{name} lik_y: {agree:.3%} within {LIK_Y_ATOL:g}; max |Δ| {diff_y.max():.3g}"
    )
    # Most y likelihoods sit at the 1e-9 floor, invisible to an absolute tolerance but 30 bits
    # each: the total rate sees them.
    bits, ref_bits = -np.log2(lik_y).sum(), -np.log2(ref_y).sum()
    assert abs(bits - ref_bits) <= BITS_RTOL * ref_bits, f"{name}: {bits} bits, ref {ref_bits}"

    lik_z = out["likelihoods"]["z"].numpy().astype(np.float64)
    assert lik_z.shape == ref["lik_z"].shape, f"{name} lik_z: shape {lik_z.shape}"
    diff_z = np.abs(lik_z - ref["lik_z"].astype(np.float64)).max()
    assert diff_z <= LIK_Z_ATOL, f"{name} lik_z: max |Δ| {diff_z:.3g}"


def check_coding(
    name: str,
    model: nn.Module,
    x: Tensor,
    ref_y: np.ndarray,
    ref_z: np.ndarray,
    ref_decoded: np.ndarray,
    *lmbda: float,
) -> dict[str, Any]:
    """Compress ``x``, compare the stream lengths and the decoded image; return ``compress``'s
    output (for the extra fields of TCMVBR)."""
    with torch.inference_mode():
        out = model.compress(x, *lmbda)
        (y_string,), (z_string,) = out["strings"]
        for part, ours, ref in (("y", y_string, ref_y), ("z", z_string, ref_z)):
            assert abs(len(ours) - ref.size) <= BITSTREAM_RTOL * ref.size, (
                f"{name} {part} stream: {len(ours)} bytes, reference {ref.size}"
            )
        decoded = model.decompress(out["strings"], out["shape"], *lmbda)["x_hat"]
    identical = y_string == ref_y.tobytes() and z_string == ref_z.tobytes()
    # Byte-identical streams carry the same symbols, so decoding differs only in float
    # reordering: compare tightly. Otherwise some symbols flipped: we compare the decode of our
    # own stream with the looser two-tier rule. The reference's stream is not decoded with our
    # model: with last-bit-different predicted scales a symbol can get another CDF, and it then
    # does not reproduce the reference's decode exactly either (measured: 0.021 at λ index 3.0).
    assert_images_close(f"{name} decoded x_hat", decoded.numpy(), ref_decoded, exact=identical)
    return out


@pytest.fixture(scope="module")
def reference_dir() -> Path:
    return require_shared("fixtures/seed_reference") / "fixtures" / "seed_reference"


@pytest.fixture(scope="module")
def image(reference_dir: Path) -> Tensor:
    """The (1, 3, 256, 256) input, read as RGB / 255 as the README says (read with Pillow
    directly, so that a change in our data loaders cannot show up as a model mismatch)."""
    with Image.open(reference_dir / "input_256.png") as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    assert x.shape == (1, 3, 256, 256)
    return x


@pytest.fixture(scope="module")
def tcm(reference_dir: Path) -> nn.Module:
    return build_reference_model(TCM(N=64, M=320), reference_dir / "tcm_weights_spec.json")


@pytest.fixture(scope="module")
def tcm_vbr(reference_dir: Path) -> nn.Module:
    spec = reference_dir / "tcm_vbr_weights_spec.json"
    return build_reference_model(TCMVBR(N=64, M=320), spec)


@pytest.fixture(scope="module")
def tcm_expected(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / "tcm_expected.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def vbr_expected(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / "tcm_vbr_expected.npz") as data:
        return dict(data)


def test_tcm_forward_matches_reference(
    tcm: nn.Module, image: Tensor, tcm_expected: dict[str, np.ndarray]
) -> None:
    with torch.inference_mode():
        out = tcm(image)
    assert_images_close("TCM x_hat", out["x_hat"].numpy(), tcm_expected["x_hat"], exact=False)
    assert_likelihoods_close("TCM", out, tcm_expected)


@pytest.mark.parametrize("lmbda", VBR_FORWARD_LAMBDAS)
def test_tcm_vbr_forward_matches_reference(
    tcm_vbr: nn.Module, image: Tensor, vbr_expected: dict[str, np.ndarray], lmbda: float
) -> None:
    suffix = f"_l{lmbda:.1f}".replace(".", "_")  # 2.5 -> "_l2_5"
    ref = {key: vbr_expected[key + suffix] for key in ("x_hat", "lik_y", "lik_z")}
    with torch.inference_mode():
        out = tcm_vbr(image, lmbda)
    name = f"TCMVBR λ={lmbda}"
    assert_images_close(f"{name} x_hat", out["x_hat"].numpy(), ref["x_hat"], exact=False)
    assert_likelihoods_close(name, out, ref)


def test_tcm_compress_matches_reference(
    tcm: nn.Module, image: Tensor, tcm_expected: dict[str, np.ndarray]
) -> None:
    ref = tcm_expected
    check_coding("TCM", tcm, image, ref["compress_y"], ref["compress_z"], ref["decompress_x_hat"])


def test_tcm_vbr_compress_matches_reference(
    tcm_vbr: nn.Module, image: Tensor, vbr_expected: dict[str, np.ndarray]
) -> None:
    ref = vbr_expected
    out = check_coding(
        f"TCMVBR λ={VBR_COMPRESS_LAMBDA}",
        tcm_vbr,
        image,
        ref["compress_l3_y"],
        ref["compress_l3_z"],
        ref["decompress_l3_x_hat"],
        VBR_COMPRESS_LAMBDA,
    )
    # The encoder mask comes from y before quantisation, so symbol flips do not touch it.
    log_mask = float(out["log_mask_mean"].item())
    ref_log_mask = float(ref["compress_l3_mean_log_mask"])
    assert abs(log_mask - ref_log_mask) <= LOG_MASK_ATOL, (log_mask, ref_log_mask)
