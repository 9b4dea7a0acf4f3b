"""What rate and quality control spend their time on: CPU time of each step against one plain
encode of the same image (the median over the images of the best of three runs each).

    OMP_NUM_THREADS=1 python experiments/rate_control/cost.py [IMAGE ...] [--checkpoint PATH]

Default images: the first four of Kodak (``LAE_VBR_SHARED`` or ``../shared``). CPU (process)
time, on one thread, so another job on the machine does not inflate it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.probe import ImageProbe
from lae_vbr.paths import shared_dir


def cpu_time(call: Callable[[], object], runs: int = 3) -> float:
    """The best CPU time of ``runs`` calls."""
    best = float("inf")
    for _ in range(runs):
        began = time.process_time()
        call()
        best = min(best, time.process_time() - began)
    return best


def steps(codec: ImageCodec, path: Path, idx: float = 2.3) -> dict[str, float]:
    """Each step's CPU time / one plain encode's, for one image."""
    x = read_image(path)
    plain = cpu_time(lambda: codec.encode(x, idx))
    probe = ImageProbe(codec, x)

    def estimate() -> None:
        probe.forget_estimates()  # measure the estimate, not its cache
        probe.estimate_bits(idx)

    probe.coder = probe.analysis.coder(codec.arithmetic)
    stream = codec.encode(x, idx)
    costs = {
        "analysis g_a (once per image)": cpu_time(lambda: ImageProbe(codec, x)),
        "rate estimate (one λ index)": cpu_time(estimate),
        "real encode reusing g_a": cpu_time(lambda: probe.encode(idx)),
        "latent codec to float64 (once per call)": cpu_time(
            lambda: probe.analysis.coder(codec.arithmetic)
        ),
        "Σ log₂ m at one index (LAE)": cpu_time(lambda: probe.rates.log2_mask_sum([idx])),
        "reconstruction (one PSNR round)": cpu_time(lambda: probe.reconstruct(idx)),
        "plain decode": cpu_time(lambda: codec.decode(stream)),
    }
    return {"plain encode (s)": plain, **{k: v / plain for k, v in costs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = args.images or sorted((shared_dir() / "data" / "kodak").glob("*.png"))[:4]
    codec = ImageCodec.load(args.checkpoint)
    rows = [steps(codec, path) for path in images]
    print(f"{len(images)} images: {', '.join(p.name for p in images)}\n")
    print("| step | CPU time / plain encode (median) |\n|---|---|")
    for key in rows[0]:
        value = statistics.median(r[key] for r in rows)
        print(f"| {key} | {value:.3f} |")


if __name__ == "__main__":
    main()
