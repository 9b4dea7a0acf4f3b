"""Where TCM-VBR's forward, compress and decompress spend their time: the top operators of
``torch.profiler`` for each coding arithmetic, on one image.

    OMP_NUM_THREADS=1 python experiments/bench/profile_codec.py \
        --image ../shared/data/kodak/kodim01.png --threads 1 \
        --out experiments/bench/profile_cpu.json

Untrained TCM-VBR N=64 (seed 0) at λ index 3, as ``bench_codec.py``. For the forward pass
and, for each arithmetic (``float64``, the default of format version 2, and ``float32``),
compress and decompress, it times one warm run and profiles the next; the record lists each
phase's wall time and its operators sorted by their own CPU time, with their share of the
total. ``--layout nhwc`` runs the transforms channels-last (``transforms_to_channels_last``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.profiler import profile

from lae_vbr.codec.images import read_image
from lae_vbr.models import TCMVBR


def top_operators(prof: profile, count: int, by_shape: bool = False) -> list[dict]:
    """The ``count`` operators with the most self CPU time, with their share of the total;
    ``by_shape``: each operator per distinct input shapes (which layer it is)."""
    averages = prof.key_averages(group_by_input_shape=by_shape)
    events = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls": e.count,
            **({"input_shapes": [s for s in e.input_shapes if s]} if by_shape else {}),
        }
        for e in events[:count]
    ]


def profile_phase(fn, count: int) -> dict:
    fn()  # warm-up
    began = time.perf_counter()
    fn()
    wall = time.perf_counter() - began
    with profile(record_shapes=True) as prof:
        fn()
    return {
        "wall_s": round(wall, 3),
        "top": top_operators(prof, count),
        "top_by_input_shape": top_operators(prof, count, by_shape=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--lmbda-index", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = read_image(args.image)
    model = TCMVBR(N=args.N).eval()
    model.update()
    if args.layout == "nhwc":
        model.transforms_to_channels_last()
    phases = {}
    with torch.inference_mode():
        phases["forward"] = profile_phase(lambda: model(x, args.lmbda_index), args.top)
        for arithmetic in ("float64", "float32"):
            enc = model.compress(x, args.lmbda_index, arithmetic=arithmetic)
            phases[f"compress_{arithmetic}"] = profile_phase(
                lambda a=arithmetic: model.compress(x, args.lmbda_index, arithmetic=a), args.top
            )
            phases[f"decompress_{arithmetic}"] = profile_phase(
                lambda e=enc, a=arithmetic: model.decompress(
                    e["strings"], e["shape"], args.lmbda_index, arithmetic=a
                ),
                args.top,
            )
    for name, phase in phases.items():
        ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in phase["top"][:4])
        print(f"{name}: {phase['wall_s']:.2f} s; {ops}")
    record = {
        "image": args.image.name,
        "model": f"TCMVBR N={args.N} (untrained, seed 0)",
        "threads": args.threads,
        "layout": args.layout,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "phases": phases,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
