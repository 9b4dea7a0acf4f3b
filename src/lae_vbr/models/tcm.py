"""TCM: the mixed Transformer-CNN learned image codec of Liu et al. (CVPR 2023).

A CompressAI ``CompressionModel`` with the reference's module names, so checkpoints released
for LIC_TCM / VBR_work load unchanged. Unlike the reference, M, the number of slices and the
hyper-latent width are real parameters, and any image size (1×1 up) works: inputs are padded
to a multiple of 128 and outputs cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import (
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv3x3,
    subpel_conv3x3,
)
from compressai.models import CompressionModel
from torch import Tensor, nn

from .entropy import (
    DecodeStep,
    EncodeStep,
    LikelihoodStep,
    build_slice_transforms,
    run_slices,
    ste_round,
)
from .layers import ConvTransBlock
from .padding import crop_image, pad_image
from .state_dict import register_entropy_buffer_resizing

__all__ = ["TCM", "TCM_SIZES"]

#: N (transform width) of the Small / Middle / Large models.
TCM_SIZES = {"S": 64, "M": 96, "L": 128}


def _stage(
    n: int, depth: int, head_dim: int, window: int, drop_path: Sequence[float]
) -> list[nn.Module]:
    """``depth`` ConvTransBlocks alternating regular and shifted windows."""
    return [
        ConvTransBlock(n, n, head_dim, window, drop_path[i], "W" if i % 2 == 0 else "SW")
        for i in range(depth)
    ]


class TCM(CompressionModel):
    """Fixed-rate TCM.

    Args:
        N: transform width (64 / 96 / 128 for S / M / L).
        M: latent channels.
        num_slices: channel slices of the autoregressive entropy model.
        max_support_slices: previously decoded slices used as context (−1: all).
        hyper_channels: channels of the hyper-latent z.
        depths: ConvTransBlocks per stage (3 analysis stages, then 3 synthesis stages).
        head_dims: attention head width per stage.
        window_size: attention window of the main transforms and the entropy-model SWAtten.
        hyper_window_size, hyper_head_dim: attention of the hyper transforms.
        atten_dim, atten_head_dim: SWAtten bottleneck width and head width.
        slice_hidden: widths of the two hidden layers of the mean/scale/LRP transforms.
        drop_path_rate: stochastic depth of the main transforms (0 in the paper).
    """

    #: Side lengths are padded to a multiple of this before coding.
    pad_multiple = 128

    def __init__(
        self,
        N: int = 64,
        M: int = 320,
        num_slices: int = 5,
        max_support_slices: int = 5,
        hyper_channels: int = 192,
        depths: Sequence[int] = (2, 2, 2, 2, 2, 2),
        head_dims: Sequence[int] = (8, 16, 32, 32, 16, 8),
        window_size: int = 8,
        hyper_window_size: int = 4,
        hyper_head_dim: int = 32,
        atten_dim: int = 128,
        atten_head_dim: int = 16,
        slice_hidden: Sequence[int] = (224, 128),
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(depths) != 6 or len(head_dims) != 6:
            raise ValueError("depths and head_dims need one entry per stage (6)")
        self.N, self.M = N, M
        self.num_slices = num_slices
        self.max_support_slices = max_support_slices
        # Registered first, as in the reference, so state-dict key order matches it.
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(6)]
        # The reference reuses the 4th stage's drop-path offsets for all synthesis stages.
        starts[4] = starts[5] = starts[3]

        def stage(i: int) -> list[nn.Module]:
            return _stage(N, depths[i], head_dims[i], window_size, dpr[starts[i] :])

        self.g_a = nn.Sequential(
            ResidualBlockWithStride(3, 2 * N, 2),
            *stage(0),
            ResidualBlockWithStride(2 * N, 2 * N, 2),
            *stage(1),
            ResidualBlockWithStride(2 * N, 2 * N, 2),
            *stage(2),
            conv3x3(2 * N, M, stride=2),
        )
        self.g_s = nn.Sequential(
            ResidualBlockUpsample(M, 2 * N, 2),
            *stage(3),
            ResidualBlockUpsample(2 * N, 2 * N, 2),
            *stage(4),
            ResidualBlockUpsample(2 * N, 2 * N, 2),
            *stage(5),
            subpel_conv3x3(2 * N, 3, 2),
        )
        no_drop = [0.0] * max(depths)

        def hyper_stage(depth: int) -> list[nn.Module]:
            return _stage(N, depth, hyper_head_dim, hyper_window_size, no_drop)

        self.h_a = nn.Sequential(
            ResidualBlockWithStride(M, 2 * N, 2),
            *hyper_stage(depths[0]),
            conv3x3(2 * N, hyper_channels, stride=2),
        )

        def hyper_synthesis() -> nn.Sequential:
            return nn.Sequential(
                ResidualBlockUpsample(hyper_channels, 2 * N, 2),
                *hyper_stage(depths[3]),
                subpel_conv3x3(2 * N, M, 2),
            )

        self.h_mean_s = hyper_synthesis()
        self.h_scale_s = hyper_synthesis()
        transforms = build_slice_transforms(
            M, num_slices, max_support_slices, atten_dim, atten_head_dim, window_size, slice_hidden
        )
        for name, module in transforms.items():
            self.add_module(name, module)
        self.gaussian_conditional = GaussianConditional(None)
        register_entropy_buffer_resizing(self)

    # -- shared pieces ------------------------------------------------------------------
    def _hyper_synthesis(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        return self.h_mean_s(z_hat), self.h_scale_s(z_hat)

    # -- CompressAI API -------------------------------------------------------------------
    def forward(self, x: Tensor) -> dict:
        """Training/evaluation pass with likelihoods (any image size)."""
        height, width = x.shape[-2:]
        y = self.g_a(pad_image(x, self.pad_multiple))
        out = self.forward_latent(y)
        out["x_hat"] = crop_image(out["x_hat"], height, width)
        return out

    def forward_latent(self, y: Tensor, z: Tensor | None = None) -> dict:
        """Everything after the analysis transform; ``z`` may be given (latent refinement)."""
        if z is None:
            z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        z_offset = self.entropy_bottleneck._get_medians()
        z_hat = ste_round(z - z_offset) + z_offset
        latent_means, latent_scales = self._hyper_synthesis(z_hat)
        step = LikelihoodStep(y, self.num_slices, self.gaussian_conditional)
        y_hat = run_slices(self, latent_means, latent_scales, y.shape[-2:], step)
        x_hat = self.g_s(y_hat)
        return {
            "x_hat": x_hat,
            "likelihoods": {"y": step.likelihood(), "z": z_likelihoods},
            "y": y,
            "z": z,
        }

    def compress(self, x: Tensor) -> dict:
        """Entropy-code a batch; one y string and one z string per image."""
        height, width = x.shape[-2:]
        y = self.g_a(pad_image(x, self.pad_multiple))
        out = self.compress_latent(y)
        out["image_size"] = (height, width)
        return out

    def compress_latent(self, y: Tensor, z: Tensor | None = None) -> dict:
        if z is None:
            z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        latent_means, latent_scales = self._hyper_synthesis(z_hat)
        step = EncodeStep(y, self.num_slices, self.gaussian_conditional)
        run_slices(self, latent_means, latent_scales, y.shape[-2:], step)
        return {"strings": [step.flush(), z_strings], "shape": tuple(z.shape[-2:])}

    def decompress(
        self,
        strings: Sequence[Sequence[bytes]],
        shape: Sequence[int],
        image_size: Sequence[int] | None = None,
    ) -> dict:
        """Decode ``strings`` (``[y_strings, z_strings]``); crop to ``image_size`` if given."""
        y_strings, z_strings = strings
        z_hat = self.entropy_bottleneck.decompress(z_strings, tuple(shape))
        latent_means, latent_scales = self._hyper_synthesis(z_hat)
        y_hw = (z_hat.shape[2] * 4, z_hat.shape[3] * 4)
        step = DecodeStep(y_strings, self.gaussian_conditional)
        y_hat = run_slices(self, latent_means, latent_scales, y_hw, step)
        x_hat = self.g_s(y_hat).clamp_(0, 1)
        if image_size is not None:
            x_hat = crop_image(x_hat, *image_size)
        return {"x_hat": x_hat}
