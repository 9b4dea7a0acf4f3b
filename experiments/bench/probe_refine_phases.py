"""Where a latent refinement's memory peaks: the process's peak resident memory at the start
and end of each phase of one ``refine_encode`` step (analysis, latent codec, each layer of
``g_s``'s banded backward pass, the final coding; ``g_s``'s forward pass ends at the first
layer gradient), TCM-VBR N=64 as in ``bench_memory.py``, freed memory kept as ``lae-vbr``
keeps it, one thread::

    OMP_NUM_THREADS=1 python experiments/bench/probe_refine_phases.py 3840x2160 [--keep-descent]
    OMP_NUM_THREADS=1 python experiments/bench/probe_refine_phases.py 3840x2160 --compress

With freed memory kept the peak only grows, so the phase that raises it is the one to cut.
``--keep-descent``: do not give the descent's freed maps back before the coding (as before
``refine_encode`` did), to see what that release saves. ``--compress``: the phases of a plain
``model.compress`` instead, to compare.
"""

from __future__ import annotations

import functools
import sys
import time

import torch
from bench_memory import (
    DEFAULT_IMAGE,
    bench_model,
    coding_path,
    parse_size,
    peak_rss_gb,
    resident_gb,
    tiled_image,
)

from lae_vbr.codec import refine
from lae_vbr.heap import keep_freed_memory
from lae_vbr.models import analysis, banded_grad, composed, latent_codec

BEGAN = time.perf_counter()


def _print(label: str, when: str) -> None:
    seconds = time.perf_counter() - BEGAN
    peak, now = peak_rss_gb(), resident_gb()
    print(f"{seconds:7.1f} s  {label:<22} {when} peak {peak:.2f} GB, now {now:.2f} GB")


def _report(owner: object, name: str, label: str) -> None:
    """Print the peak and the resident memory at the start and the end of every call of
    ``owner.name`` (a class's method or a module's function looked up at call time)."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def reported(*args, **kwargs):
        _print(label, "start")
        result = function(*args, **kwargs)
        _print(label, "end  ")
        return result

    setattr(owner, name, reported)


def main() -> None:
    height, width = parse_size(sys.argv[1] if len(sys.argv) > 1 else "2048x2048")
    if "--keep-descent" in sys.argv:
        refine.release_freed_memory = lambda: False
    torch.set_num_threads(1)
    keep_freed_memory()
    _report(analysis.LatentAnalysis, "__init__", "analysis (g_a)")
    _report(latent_codec.TCMLatentCodec, "forward", "latent codec")
    _report(banded_grad, "layer_gradient", "g_s layer gradient")
    _report(composed.ComposedCodec, "analysis", "analysis (g_a)")
    _report(composed.ComposedCodec, "code_latent", "coding")
    model = bench_model(untiled=False, layout="nchw")
    x = tiled_image(DEFAULT_IMAGE, height, width)
    print(f"model: {peak_rss_gb():.2f} GB")
    if "--compress" in sys.argv:
        result = {"bytes": sum(len(s[0]) for s in model.compress(x, 3.0)["strings"])}
    else:
        result = coding_path("refine", model, x, 3.0)
    print(f"{result}: peak {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
