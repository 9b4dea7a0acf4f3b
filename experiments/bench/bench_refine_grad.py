"""Peak memory and time of the latent-refinement gradient through TCM-VBR N=64's frozen g_s:
whole-map autograd against the gradient in row bands (``models/banded_grad.py``).

    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py banded 1024
    OMP_NUM_THREADS=1 python experiments/bench/bench_refine_grad.py whole 1024

One process per measurement (``ru_maxrss`` is the process's peak), freed memory kept as
``lae-vbr`` keeps it; ``SIDE``: the output image's side in pixels (a random latent of SIDE/16).
"""

from __future__ import annotations

import resource
import sys
import time

import torch

from lae_vbr.heap import keep_freed_memory
from lae_vbr.models import TCMVBR, banded_grad


def main() -> None:
    mode, side = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    keep_freed_memory()
    torch.manual_seed(0)
    g_s = TCMVBR(N=64).eval().g_s
    g_s.requires_grad_(False)
    y = torch.randn(1, 320, side // 16, side // 16, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    began = time.perf_counter()
    if mode == "banded":
        banded_grad.MIN_PIXELS = 0
        out = banded_grad.synthesise(g_s, y)
    else:
        out = g_s(y)
    torch.autograd.grad(out.float().square().mean(), y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{mode} {side}x{side}: peak {peak:.2f} GB (model {base:.2f} GB), "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
