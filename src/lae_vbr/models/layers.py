"""Swin-Transformer / CNN building blocks of TCM (Liu et al., CVPR 2023).

Parameter names and shapes follow the reference implementation, so its checkpoints load
unchanged. The computation is the same up to float rounding; it is organised for speed
(cached relative-position indices and shift masks, fused scaled-dot-product attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.layers import AttentionBlock, ResidualBlock, conv1x1
from compressai.layers import ResidualBlockWithStride as _CompressAIResidualBlockWithStride
from torch import Tensor, nn

__all__ = [
    "WindowAttention",
    "SwinLayer",
    "ConvTransBlock",
    "SwinPair",
    "SWAtten",
    "ResidualBlockWithStride",
    "SubsampledConv1x1",
]

#: Largest attention-score tensor (floats) computed at once at inference (32 MB).
ATTENTION_CHUNK_ELEMENTS = 1 << 23


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head self-attention with a relative position bias.

    Input and output are channels-last ``(B, H, W, C)``; H and W must be multiples of the
    window size (callers pad). ``kind`` is ``"W"`` (regular windows) or ``"SW"`` (windows
    shifted by half a window with a cyclic roll and an attention mask).
    """

    def __init__(self, dim: int, head_dim: int, window_size: int, kind: str = "W") -> None:
        super().__init__()
        if kind not in ("W", "SW"):
            raise ValueError(f"window kind must be 'W' or 'SW', got {kind!r}")
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.dim = dim
        self.head_dim = head_dim
        self.n_heads = dim // head_dim
        self.window_size = window_size
        self.kind = kind
        self.embedding_layer = nn.Linear(dim, 3 * dim)
        span = 2 * window_size - 1
        table = nn.init.trunc_normal_(torch.zeros(span * span, self.n_heads), std=0.02)
        # Stored as (heads, 2w-1, 2w-1) like the reference; a fresh dense tensor, so its
        # strides match its gradient's (DDP buckets warn otherwise).
        params = torch.empty(self.n_heads, span, span)
        params.copy_(table.view(span, span, self.n_heads).permute(2, 0, 1))
        self.relative_position_params = nn.Parameter(params)
        self.linear = nn.Linear(dim, dim)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"), -1
        ).view(-1, 2)
        relation = coords[:, None, :] - coords[None, :, :] + window_size - 1
        self.register_buffer(
            "_rel_index", relation[..., 0] * span + relation[..., 1], persistent=False
        )
        self._mask_cache: dict[tuple, Tensor] = {}

    def _relative_bias(self) -> Tensor:
        """(heads, w², w²) bias gathered from the learnable table."""
        table = self.relative_position_params.flatten(1)
        return table[:, self._rel_index]

    def _shift_mask(self, h_windows: int, w_windows: int, device: torch.device) -> Tensor:
        """Boolean (n_windows, w², w²) mask, True where a shifted window mixes unrelated regions."""
        key = (h_windows, w_windows, device)
        mask = self._mask_cache.get(key)
        if mask is None:
            p = self.window_size
            s = p - p // 2
            # a normal tensor even under inference_mode, so the cached mask stays usable when
            # gradients are needed later (e.g. latent refinement after a plain encode)
            with torch.inference_mode(False):
                m = torch.zeros(h_windows, w_windows, p, p, p, p, dtype=torch.bool, device=device)
                m[-1, :, :s, :, s:, :] = True
                m[-1, :, s:, :, :s, :] = True
                m[:, -1, :, :s, :, s:] = True
                m[:, -1, :, s:, :, :s] = True
                mask = m.view(h_windows * w_windows, p * p, p * p)
            self._mask_cache = {key: mask}
        return mask

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        p = self.window_size
        shift = p // 2
        if self.kind == "SW":
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        hw, ww = h // p, w // p
        windows = x.view(b, hw, p, ww, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hw * ww, p * p, c)
        del x  # the rolled copy
        mask = self._shift_mask(hw, ww, windows.device) if self.kind == "SW" else None
        out = self._attend_in_chunks(windows, mask)
        out = out.view(b, hw, ww, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.kind == "SW":
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out

    def _attend_in_chunks(self, windows: Tensor, mask: Tensor | None) -> Tensor:
        """:meth:`_attend` over groups of windows when no gradient is recorded.

        The score tensor of all windows at once is heads·p⁴ floats per window, four times the
        activations of stage 0 (a 4K image needs 4 GB for it, and as much again for its
        softmax). Windows are independent and the CPU kernels compute each window the same
        way whatever their number, so the chunked result is bit-identical to the unchunked one
        (other devices, whose libraries choose algorithms by shape, are left unchunked).
        """
        n = windows.shape[1]
        per_chunk = max(1, ATTENTION_CHUNK_ELEMENTS // (self.n_heads * self.window_size**4))
        if torch.is_grad_enabled() or windows.device.type != "cpu" or n <= per_chunk:
            return self._attend(windows, mask)
        out = torch.empty_like(windows)
        for i in range(0, n, per_chunk):
            j = min(n, i + per_chunk)
            out[:, i:j] = self._attend(windows[:, i:j], None if mask is None else mask[i:j])
        return out

    def _attend(self, windows: Tensor, mask: Tensor | None) -> Tensor:
        """Attention within each window of ``(B, n, p², C)``; ``mask`` (n, p², p²) or None."""
        b, n, pp, c = windows.shape
        qkv = self.embedding_layer(windows)
        # channels are laid out as (3·heads, head_dim): q heads, then k heads, then v heads.
        qkv = qkv.view(b, n, pp, 3 * self.n_heads, self.head_dim).permute(3, 0, 1, 2, 4)
        q, k, v = qkv.split(self.n_heads, dim=0)
        # (heads, B, windows, w², w²) scores; bias and shift mask are added in place, which
        # keeps memory at one score tensor (a fused kernel would need a materialised mask).
        scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-2, -1))
        scores += self._relative_bias().to(windows.dtype)[:, None, None]
        if mask is not None:
            scores.masked_fill_(mask, float("-inf"))
        out = torch.matmul(scores.softmax(dim=-1), v)
        del scores, qkv, q, k
        out = out.permute(1, 2, 3, 0, 4).reshape(b, n, pp, c)
        return self.linear(out)


class SwinLayer(nn.Module):
    """Pre-norm transformer layer: window attention and a 4× MLP, both residual (channels-last)."""

    def __init__(
        self, dim: int, head_dim: int, window_size: int, drop_path: float = 0.0, kind: str = "W"
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.msa = WindowAttention(dim, head_dim, window_size, kind)
        self.drop_path = _drop_path(drop_path)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.msa(self.ln1(x)))
        return x + self.drop_path(self.mlp(self.ln2(x)))


def _drop_path(rate: float) -> nn.Module:
    """Stochastic depth (per sample) at ``rate``, or the identity; torchvision (an import of
    seconds, with torch._dynamo) is imported only for a model trained with it."""
    if rate <= 0:
        return nn.Identity()
    from torchvision.ops import StochasticDepth

    return StochasticDepth(rate, "row")


def _pad_to_windows(x: Tensor, window: int) -> tuple[Tensor, int, int]:
    """Zero-pad a (B, C, H, W) map at the bottom/right to multiples of ``window``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % window, (-w) % window
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, h, w


class ConvTransBlock(nn.Module):
    """TCM's mixed block: a residual CNN half and a Swin half, fused by 1×1 convolutions."""

    def __init__(
        self,
        conv_dim: int,
        trans_dim: int,
        head_dim: int,
        window_size: int,
        drop_path: float = 0.0,
        kind: str = "W",
    ) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        self.trans_dim = trans_dim
        self.window_size = window_size
        self.trans_block = SwinLayer(trans_dim, head_dim, window_size, drop_path, kind)
        total = conv_dim + trans_dim
        self.conv1_1 = nn.Conv2d(total, total, 1)
        self.conv1_2 = nn.Conv2d(total, total, 1)
        self.conv_block = ResidualBlock(conv_dim, conv_dim)

    def forward(self, x: Tensor) -> Tensor:
        conv_x, trans_x = torch.split(self.conv1_1(x), (self.conv_dim, self.trans_dim), dim=1)
        conv_x = self.conv_block(conv_x) + conv_x
        trans_x, h, w = _pad_to_windows(trans_x, self.window_size)
        trans_x = self.trans_block(trans_x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        trans_x = trans_x[..., :h, :w]
        return x + self.conv1_2(torch.cat((conv_x, trans_x), dim=1))


class SwinPair(nn.Module):
    """A regular-window layer followed by a shifted-window layer (channels-first in and out).

    Maps whose sides are not multiples of the window are zero-padded at the bottom/right and
    cropped back. (The reference pads only maps no larger than one window, to window+1, which
    breaks on a latent side of exactly one window; multiples of the window pass through
    unchanged in both.)
    """

    def __init__(self, dim: int, head_dim: int, window_size: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.block_1 = SwinLayer(dim, head_dim, window_size, drop_path, "W")
        self.block_2 = SwinLayer(dim, head_dim, window_size, drop_path, "SW")

    def forward(self, x: Tensor) -> Tensor:
        x, h, w = _pad_to_windows(x, self.window_size)
        x = self.block_2(self.block_1(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x[..., :h, :w]


class SWAtten(AttentionBlock):
    """Swin-based attention used on the entropy-model supports: a·sigmoid(b(Swin(x))) + x,
    inside a 1×1 bottleneck of ``inter_dim`` channels."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        head_dim: int,
        window_size: int,
        drop_path: float = 0.0,
        inter_dim: int = 128,
    ) -> None:
        super().__init__(N=inter_dim)
        self.non_local_block = SwinPair(inter_dim, head_dim, window_size, drop_path)
        self.in_conv = conv1x1(input_dim, inter_dim)
        self.out_conv = conv1x1(inter_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_conv(x)
        z = self.non_local_block(x)
        out = self.conv_a(x) * torch.sigmoid(self.conv_b(z)) + x
        return self.out_conv(out)


class SubsampledConv1x1(nn.Conv2d):
    """A strided 1×1 convolution computed as a stride-1 one on every ``stride``-th pixel.

    The values are those of the strided convolution (each output pixel is ``W·x + b`` at one
    input pixel). It exists because oneDNN's weight gradient of a strided 1×1 convolution on
    channels-last maps with few input channels (3 to 8) corrupts the heap on the CPU ("double
    free or corruption" or a silent exit in ``backward``, torch 2.14), which ended any
    ``channels_last=true`` training of TCM at its first step.
    """

    def forward(self, x: Tensor) -> Tensor:
        rows, cols = self.stride
        return F.conv2d(x[..., ::rows, ::cols], self.weight, self.bias, groups=self.groups)


class ResidualBlockWithStride(_CompressAIResidualBlockWithStride):
    """CompressAI's block with its strided 1×1 skip as a :class:`SubsampledConv1x1`.

    Same parameters, names and initialisation (the skip's weights are CompressAI's own), so
    checkpoints and seeded models are unchanged.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2) -> None:
        super().__init__(in_ch, out_ch, stride)
        if self.skip is not None and self.skip.stride != (1, 1):
            skip = SubsampledConv1x1(in_ch, out_ch, 1, stride=stride, device="meta")
            skip.weight, skip.bias = self.skip.weight, self.skip.bias
            self.skip = skip
