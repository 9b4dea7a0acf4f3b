"""Peak memory and time of the latent-refinement gradient through TCM-VBR N=64's frozen parts.

``g_s`` (``models/banded_grad.py``): whole-map autograd against the gradient in row bands::

    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py banded 1024
    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py whole 1024

The latent codec with straight-through rounding (``models/entropy.py``, ``run_networks``):
every autograd intermediate kept, the codec checkpointed as a whole (recomputed at once in the
backward pass), or each network recomputed alone (what refinement of large images runs)::

    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py latent-kept 2048
    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py latent-whole 2048
    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py latent-networks 2048

One process per measurement (``ru_maxrss`` is the process's peak), freed memory kept as
``lae-vbr`` keeps it; ``SIDE``: the image's side in pixels (a random latent of SIDE/16, or
``HxW``). The latent modes print the sum of the gradients' magnitudes, the same in all three.
"""

from __future__ import annotations

import resource
import sys
import time
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from lae_vbr.heap import keep_freed_memory
from lae_vbr.models import TCMVBR, banded_grad

MODES = ("banded", "whole", "latent-kept", "latent-whole", "latent-networks")


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synthesis_gradient(model: TCMVBR, mode: str, height: int, width: int) -> str:
    g_s = model.g_s
    y = torch.randn(1, 320, height // 16, width // 16, requires_grad=True)
    if mode == "banded":
        banded_grad.MIN_PIXELS = 0
        out = banded_grad.synthesise(g_s, y)
    else:
        out = g_s(y)
    torch.autograd.grad(out.float().square().mean(), y)
    return ""


def latent_codec_gradient(model: TCMVBR, mode: str, height: int, width: int) -> str:
    codec = model.latent_codec
    y = 3 * torch.randn(1, 320, height // 16, width // 16)
    with torch.no_grad():
        z = codec.hyper_analysis(y)
    y, z = y.requires_grad_(True), z.requires_grad_(True)
    if mode == "latent-whole":
        out = checkpoint(partial(codec, straight_through=True), y, z, use_reentrant=False)
    else:
        out = codec(y, z, straight_through=True, recompute=mode == "latent-networks")
    rate = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
    grads = torch.autograd.grad(rate + 0.01 * out["y_hat"].sum(), (y, z))
    return f", gradient magnitudes {sum(g.abs().sum().item() for g in grads):.9e}"


def main() -> None:
    mode, side = sys.argv[1], sys.argv[2]
    if mode not in MODES:
        sys.exit(f"mode must be one of {MODES}")
    height, width = map(int, side.split("x")) if "x" in side else (int(side), int(side))
    torch.set_num_threads(1)
    keep_freed_memory()
    torch.manual_seed(0)
    model = TCMVBR(N=64).eval()
    model.requires_grad_(False)
    base = _rss_gb()
    began = time.perf_counter()
    run = latent_codec_gradient if mode.startswith("latent") else synthesis_gradient
    extra = run(model, mode, height, width)
    print(f"{mode} {height}x{width}: peak {_rss_gb():.2f} GB (model {base:.2f} GB), "
          f"{time.perf_counter() - began:.1f} s{extra}")  # fmt: skip


if __name__ == "__main__":
    main()
