"""The λ-sampled rate-distortion loss of the paper.

Each sample of a batch gets its own λ index, drawn uniformly from the trained set, and the
loss is the batch mean of ``255²·λᵢ·MSEᵢ + bppᵢ`` (MSE) or ``λᵢ·(1 − MS-SSIMᵢ) + bppᵢ``
(MS-SSIM). With a one-element λ set this is the ordinary fixed-rate loss.

A sample's loss grows with its λ (about 5× from the smallest to the largest of the paper's MSE
set), so in the plain mean the largest λs decide most of each step. ``lmbda_weight_power`` p
weights sample i by ``(λᵢ / λ̄)^(−p)`` (λ̄: the set's geometric mean) to even that out;
p = 0, the default, is the paper's loss.

With ``quality_maps`` (a :class:`~lae_vbr.quality_maps.QualityMapSampler`) each sample gets a
λ-index map at the latent's resolution instead, and the MSE term weights each pixel by the λ the
map assigns there: ``255²·mean(λ(p)·(x̂(p) − x(p))²) + bpp``, which for a constant map is the
loss above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .models.rate import interpolate_log_linear, is_rate_map
from .quality_maps import QualityMapSampler
from .rate_axis import LATENT_STRIDE

__all__ = ["MIN_MSSSIM_SIDE", "RateDistortionLoss", "bits_per_pixel", "psnr_from_mse"]

#: Smallest image side torchmetrics' 5-scale MS-SSIM (11×11 window) accepts (175 fails).
MIN_MSSSIM_SIDE = 176


def bits_per_pixel(likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
    """Per-sample Σ −log₂ p over all latents, divided by the image's pixel count."""
    bits = sum(-torch.log2(lik).flatten(1).sum(dim=1) for lik in likelihoods.values())
    return bits / num_pixels


def psnr_from_mse(mse: Tensor, data_range: float = 1.0) -> Tensor:
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def ms_ssim(x_hat: Tensor, target: Tensor) -> Tensor:
    """Per-sample MS-SSIM (data range 1); images need sides of at least MIN_MSSSIM_SIDE pixels."""
    if min(target.shape[-2:]) < MIN_MSSSIM_SIDE:
        raise ValueError(
            f"MS-SSIM needs images of at least {MIN_MSSSIM_SIDE}×{MIN_MSSSIM_SIDE}, "
            f"got {tuple(target.shape[-2:])}"
        )
    # imported on first use: torchmetrics loads torchvision, which most callers never need
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    return multiscale_structural_similarity_index_measure(
        x_hat.float(), target.float(), data_range=1.0, reduction="none"
    )


class RateDistortionLoss(nn.Module):
    """Rate-distortion loss with a per-sample λ drawn from ``lmbdas``.

    Args:
        lmbdas: the trained λ set (index i ↦ lmbdas[i]).
        distortion: ``"mse"`` or ``"ms-ssim"``.
        lmbda_weight_power: p in the per-sample weight ``(λᵢ / λ̄)^(−p)`` (0: unweighted).
        quality_maps: draw a λ-index map per sample (region-of-interest training; MSE only).
    """

    def __init__(
        self,
        lmbdas: Sequence[float],
        distortion: str = "mse",
        lmbda_weight_power: float = 0.0,
        quality_maps: QualityMapSampler | None = None,
    ) -> None:
        super().__init__()
        if distortion not in ("mse", "ms-ssim"):
            raise ValueError(f"distortion must be 'mse' or 'ms-ssim', got {distortion!r}")
        if len(lmbdas) == 0 or any(not math.isfinite(v) or v <= 0 for v in lmbdas):
            raise ValueError(f"λ values must be positive numbers, got {list(lmbdas)}")
        if not math.isfinite(lmbda_weight_power):
            raise ValueError(f"lmbda_weight_power must be a number, got {lmbda_weight_power}")
        if quality_maps is not None and distortion != "mse":
            raise ValueError(
                "quality-map training weights each pixel's squared error by its λ: it needs "
                "distortion=mse (lmbda=paper_mse), not ms-ssim"
            )
        if quality_maps is not None and len(lmbdas) < 2:
            raise ValueError("quality-map training needs a set of at least two λ")
        self.distortion = distortion
        self.quality_maps = quality_maps
        self.lmbda_weight_power = float(lmbda_weight_power)
        self.register_buffer("lmbdas", torch.tensor([float(v) for v in lmbdas]), persistent=False)

    @property
    def num_lmbdas(self) -> int:
        return self.lmbdas.numel()

    def sample_indices(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """One integer λ index per sample, uniform over the set (as floats, the models' input)."""
        idx = torch.randint(self.num_lmbdas, (batch,), generator=generator)
        return idx.to(device=self.lmbdas.device, dtype=torch.float32)

    def sample_rate(self, batch: int, latent_shape: tuple[int, int]) -> Tensor:
        """The rate argument of one training batch: one λ index per sample
        (:meth:`sample_indices`), or with ``quality_maps`` one map per sample at the latent's
        resolution (batch, 1, h, w)."""
        if self.quality_maps is None:
            return self.sample_indices(batch)
        maps = self.quality_maps(batch, latent_shape, self.num_lmbdas)
        return maps.to(self.lmbdas.device)

    def pixel_lmbdas(self, lmbda_map: Tensor, size: tuple[int, int]) -> Tensor:
        """λ at every pixel of images of ``size`` from λ-index maps at the latent's resolution
        (each latent position covers LATENT_STRIDE² pixels of the padded image)."""
        grid = lmbda_map.repeat_interleave(LATENT_STRIDE, -2).repeat_interleave(LATENT_STRIDE, -1)
        return self.lmbda_values(grid[..., : size[0], : size[1]])

    def lmbda_values(self, lmbda_idx: Tensor) -> Tensor:
        """λ for (possibly fractional) indices, log-linearly interpolated between set points."""
        return interpolate_log_linear(self.lmbdas, lmbda_idx)

    def sample_weights(self, lmbda: Tensor) -> Tensor:
        """``(λ / λ̄)^(−p)`` per sample (ones for p = 0)."""
        if not self.lmbda_weight_power:
            return torch.ones_like(lmbda)
        mean = self.lmbdas.log().mean().exp()
        return (lmbda / mean).pow(-self.lmbda_weight_power)

    def forward(self, output: Mapping, target: Tensor, lmbda_idx: Tensor | None = None) -> dict:
        """Loss terms; per-sample tensors (``bpp``, ``mse``, ``psnr``, ``lmbda``) and scalars.

        ``lmbda_idx`` may be omitted for a one-element set (fixed-rate training).
        """
        batch = target.shape[0]
        if lmbda_idx is None:
            if self.num_lmbdas != 1:
                raise ValueError("lmbda_idx is required when the λ set has several values")
            lmbda_idx = torch.zeros(batch, device=target.device)
        num_pixels = target.shape[-2] * target.shape[-1]
        bpp = bits_per_pixel(output["likelihoods"], num_pixels)
        x_hat = output["x_hat"]
        squared_error = (x_hat - target).pow(2)
        mse = squared_error.flatten(1).mean(dim=1)
        if is_rate_map(lmbda_idx):
            if self.distortion != "mse":
                raise ValueError("a λ-index map weights squared errors: it needs distortion=mse")
            pixel_lmbda = self.pixel_lmbdas(lmbda_idx, target.shape[-2:]).to(target.dtype)
            weighted_mse = (pixel_lmbda * squared_error).flatten(1).mean(dim=1)
            lmbda = pixel_lmbda.flatten(1).mean(dim=1)
        else:
            lmbda = self.lmbda_values(lmbda_idx.reshape(-1)).to(target.dtype)
            weighted_mse = lmbda * mse
        out = {"bpp": bpp, "mse": mse, "psnr": psnr_from_mse(mse.detach()), "lmbda": lmbda}
        if self.distortion == "mse":
            per_sample = 255**2 * weighted_mse + bpp
        else:
            out["ms_ssim"] = ms_ssim(x_hat, target)
            per_sample = lmbda * (1 - out["ms_ssim"]) + bpp
        out["per_sample_loss"] = per_sample
        out["loss"] = (per_sample * self.sample_weights(lmbda)).mean()
        out["bpp_loss"] = bpp.mean()
        out["mse_loss"] = mse.mean()
        return out
