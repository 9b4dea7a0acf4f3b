"""TCM: the mixed Transformer-CNN learned image codec of Liu et al. (CVPR 2023).

A :class:`~lae_vbr.models.composed.ComposedCodec` (``g_a → latent codec → g_s``) with the
reference's module names, so checkpoints released for LIC_TCM / VBR_work load unchanged. Unlike
the reference, M, the number of slices and the hyper-latent width are real parameters, and any
image size (1×1 up) works: inputs are padded to a multiple of 128 and outputs cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from compressai.layers import (
    ResidualBlockUpsample,
    conv3x3,
    subpel_conv3x3,
)
from compressai.registry import register_model
from torch import Tensor, nn

from .composed import ComposedCodec
from .latent_codec import TCMLatentCodec
from .layers import ConvTransBlock, ResidualBlockWithStride
from .state_dict import CheckpointError, normalize_state_dict

__all__ = ["TCM"]


def _stage(
    n: int, depth: int, head_dim: int, window: int, drop_path: Sequence[float]
) -> list[nn.Module]:
    """``depth`` ConvTransBlocks alternating regular and shifted windows."""
    return [
        ConvTransBlock(n, n, head_dim, window, drop_path[i], "W" if i % 2 == 0 else "SW")
        for i in range(depth)
    ]


@register_model("tcm")
class TCM(ComposedCodec):
    """Fixed-rate TCM.

    Args:
        N: transform width (64 / 96 / 128 for S / M / L).
        M: latent channels.
        num_slices: channel slices of the autoregressive entropy model.
        max_support_slices: previously decoded slices used as context (−1: all).
        hyper_channels: channels of the hyper-latent z.
        depths: ConvTransBlocks per stage (3 analysis stages, then 3 synthesis stages; the
            hyper-analysis uses the first's depth, the hyper-syntheses the fourth's).
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
        if len(depths) != 6 or len(head_dims) != 6:
            raise ValueError("depths and head_dims need one entry per stage (6)")
        g_a, g_s = _main_transforms(N, M, depths, head_dims, window_size, drop_path_rate)
        latent_codec = TCMLatentCodec(
            N,
            M,
            num_slices,
            max_support_slices,
            hyper_channels,
            (depths[0], depths[3]),
            hyper_window_size,
            hyper_head_dim,
            window_size,
            atten_dim,
            atten_head_dim,
            slice_hidden,
        )
        super().__init__(g_a, latent_codec, g_s, latent_channels=M, pad_multiple=self.pad_multiple)
        self.N, self.M = N, M

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> TCM:
        """A TCM with the architecture the tensors imply, loaded (CompressAI's convention;
        reference checkpoints too, with or without ``module.`` prefixes)."""
        sd = normalize_state_dict(state_dict)
        net = cls(**tcm_arguments(sd))
        net.load_state_dict(sd)
        return net


def tcm_arguments(sd: Mapping[str, Tensor]) -> dict[str, int]:
    """TCM's architecture (N, M, slices, hyper channels) from a state dict's tensor shapes;
    CheckpointError when the tensors are not TCM's."""

    def shape(key: str) -> Sequence[int]:
        if key not in sd:
            raise CheckpointError(f"not a TCM state dict: missing {key}")
        return sd[key].shape

    N = shape("g_a.0.conv1.weight")[0] // 2
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("g_a.") and k.endswith(".weight"))
    M = shape(f"g_a.{last}.weight")[0]
    num_slices = len({k.split(".")[1] for k in sd if k.startswith("cc_mean_transforms.")})
    slice_ch = shape("cc_mean_transforms.0.4.weight")[0]
    if num_slices * slice_ch != M:
        raise CheckpointError("slice transforms do not match the latent width")
    support = [shape(f"cc_mean_transforms.{i}.0.weight")[1] for i in range(num_slices)]
    max_support = max((s - M) // slice_ch for s in support)
    hyper = shape("entropy_bottleneck.quantiles")[0]
    return {"N": N, "M": M, "num_slices": num_slices, "max_support_slices": max_support,
            "hyper_channels": hyper}  # fmt: skip


def _main_transforms(
    N: int,
    M: int,
    depths: Sequence[int],
    head_dims: Sequence[int],
    window_size: int,
    drop_path_rate: float,
) -> tuple[nn.Sequential, nn.Sequential]:
    """g_a and g_s: three ConvTransBlock stages each, between the resampling layers."""
    dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    starts = [sum(depths[:i]) for i in range(6)]
    # The reference reuses the 4th stage's drop-path offsets for all synthesis stages.
    starts[4] = starts[5] = starts[3]

    def stage(i: int) -> list[nn.Module]:
        return _stage(N, depths[i], head_dims[i], window_size, dpr[starts[i] :])

    g_a = nn.Sequential(
        ResidualBlockWithStride(3, 2 * N, 2),
        *stage(0),
        ResidualBlockWithStride(2 * N, 2 * N, 2),
        *stage(1),
        ResidualBlockWithStride(2 * N, 2 * N, 2),
        *stage(2),
        conv3x3(2 * N, M, stride=2),
    )
    g_s = nn.Sequential(
        ResidualBlockUpsample(M, 2 * N, 2),
        *stage(3),
        ResidualBlockUpsample(2 * N, 2 * N, 2),
        *stage(4),
        ResidualBlockUpsample(2 * N, 2 * N, 2),
        *stage(5),
        subpel_conv3x3(2 * N, 3, 2),
    )
    return g_a, g_s
