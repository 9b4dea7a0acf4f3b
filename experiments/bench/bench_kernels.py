"""Two kernel alternatives, timed against what the code does: PyTorch's float64 convolution
against a hand-written im2col + ``matmul`` (the float64 entropy parameters of coding), and
the explicit window attention against PyTorch's fused ``scaled_dot_product_attention`` in
training (forward and backward of TCM's stage-0 attention).

    OMP_NUM_THREADS=2 python experiments/bench/bench_kernels.py --threads 1,2 \\
        --out experiments/bench/kernels_cpu.json

Each figure is the mean of ``--repeats`` runs after one warm-up; the two variants of each case
run back to back, twice, in alternating order. The record also gives the largest relative
difference between the variants' results (outputs and, for attention, input and bias
gradients), so a faster variant that computes something else would show.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lae_vbr.models.layers import WindowAttention

#: (in, out, kernel) of the float64 slice transforms of TCM-VBR N=64 at a 48×32 latent
#: (kodim01): a first layer at the largest support, the hidden layers, a 1×1 for scale.
CONV_SHAPES = ((576, 224, 3), (224, 128, 3), (128, 64, 3), (640, 640, 1))


def gemm_conv2d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """A stride-1, 'same'-padded convolution as im2col (``unfold``) and one ``matmul``."""
    k = weight.shape[-1]
    b, c, h, w = x.shape
    cols = x.reshape(b, c, h * w) if k == 1 else F.unfold(x, k, padding=k // 2)
    out = torch.matmul(weight.reshape(weight.shape[0], -1), cols) + bias[:, None]
    return out.view(b, weight.shape[0], h, w)


def mean_seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    began = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - began) / repeats


def relative_difference(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def alternating(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each variant's best mean time over two rounds, the order reversed in the second."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for order in (list(variants), list(variants)[::-1]):
        for name in order:
            times[name].append(mean_seconds(variants[name], repeats))
    return {name: round(min(t) * 1000, 1) for name, t in times.items()}


def float64_convolution(cin: int, cout: int, k: int, repeats: int) -> dict:
    x = torch.randn(1, cin, 32, 48, dtype=torch.float64)
    weight = torch.randn(cout, cin, k, k, dtype=torch.float64)
    bias = torch.randn(cout, dtype=torch.float64)

    def library() -> Tensor:
        return F.conv2d(x, weight, bias, padding=k // 2)

    def by_hand() -> Tensor:
        return gemm_conv2d(x, weight, bias)

    ms = alternating({"F.conv2d": library, "im2col+matmul": by_hand}, repeats)
    diff = relative_difference(library(), by_hand())
    return {"shape": f"{cin}->{cout} {k}x{k} at 48x32", "ms": ms, "max_rel_diff": diff}


def fused_attend(self: WindowAttention, windows: Tensor, mask: Tensor | None) -> Tensor:
    """:meth:`WindowAttention._attend` with the bias (and shift mask) as a float mask of
    ``scaled_dot_product_attention``."""
    b, n, pp, c = windows.shape
    qkv = self.embedding_layer(windows)
    qkv = qkv.view(b, n, pp, 3 * self.n_heads, self.head_dim).permute(3, 0, 1, 2, 4)
    q, k, v = qkv.split(self.n_heads, dim=0)
    bias = self._relative_bias().to(windows.dtype)[:, None, None]
    if mask is not None:
        bias = bias.masked_fill(mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return self.linear(out.permute(1, 2, 3, 0, 4).reshape(b, n, pp, c))


def training_attention(kind: str, repeats: int) -> dict:
    torch.manual_seed(0)
    attention = WindowAttention(64, 8, 8, kind)
    x = torch.randn(4, 128, 128, 64, requires_grad=True)

    def step(fused: bool) -> tuple[Tensor, ...]:
        x.grad = None
        attention.zero_grad()
        attention.__dict__.pop("_attend", None)
        if fused:
            attention._attend = fused_attend.__get__(attention)
        out = attention(x)
        out.square().sum().backward()
        return out, x.grad, attention.relative_position_params.grad

    diff = max(relative_difference(a, b) for a, b in zip(step(False), step(True), strict=True))
    ms = alternating(
        {"explicit": lambda: step(False), "scaled_dot_product_attention": lambda: step(True)},
        repeats,
    )
    return {
        "windows": kind,
        "input": "4x128x128x64, 8 heads, window 8",
        "ms": ms,
        "max_rel_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    record = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "runs": {},
    }
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        run = {
            "float64_convolution": [float64_convolution(*c, args.repeats) for c in CONV_SHAPES],
            "training_attention": [training_attention(k, args.repeats) for k in ("W", "SW")],
        }
        record["runs"][str(threads)] = run
        print(json.dumps({threads: run}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
