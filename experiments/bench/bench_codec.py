"""Time TCM-VBR compress / decompress / forward on one image (CPU by default).

    python experiments/bench/bench_codec.py --image ../shared/data/kodak/kodim01.png \
        --threads 2 --repeats 5 [--reference /tmp/VBR_work]

``--reference CHECKOUT`` also times the reference implementation's ``TCM_VBR`` (imported from
a checkout of github.com/gitgzq/VBR_work as ``experiments/reference_equivalence/compare.py``
does) with the same harness, the same weights and the same image, one after the other.

Untrained weights (the timing does not depend on training, only on the architecture and the
number of symbols, which untrained weights overestimate). Prints the median of ``--repeats``
timed runs after one warm-up, and writes a JSON record with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lae_vbr.codec.images import read_image
from lae_vbr.models import TCMVBR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference_equivalence"))


def _timed(fn, repeats: int, sync) -> tuple[float, list[float], object]:
    fn()  # warm-up (allocator, caches)
    sync()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def _bench(model, label: str, x: torch.Tensor, args, sync) -> dict:
    """Median forward / compress / decompress seconds of one implementation."""
    model = model.to(x.device).eval()
    model.update()
    with torch.inference_mode():
        t_fwd, fwd_runs, _ = _timed(lambda: model(x, args.lmbda_index), args.repeats, sync)
        t_enc, enc_runs, enc = _timed(
            lambda: model.compress(x, args.lmbda_index), args.repeats, sync
        )
        # each implementation decodes from what its compress returned ("shape": the z size
        # for the reference, the image size for lae-vbr)
        t_dec, dec_runs, _ = _timed(
            lambda: model.decompress(enc["strings"], enc["shape"], args.lmbda_index),
            args.repeats,
            sync,
        )
    print(
        f"{label}: {args.image.name} {list(x.shape[-2:])} ({args.threads} threads): "
        f"forward {t_fwd:.3f} s, compress {t_enc:.3f} s, decompress {t_dec:.3f} s "
        f"(median of {args.repeats})",
        flush=True,
    )
    return {
        "implementation": label,
        "forward_s": round(t_fwd, 4),
        "compress_s": round(t_enc, 4),
        "decompress_s": round(t_dec, 4),
        "runs": {"forward": fwd_runs, "compress": enc_runs, "decompress": dec_runs},
        "bytes": sum(len(s[0]) for s in enc["strings"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--lmbda-index", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reference", type=Path, help="a checkout of the reference code")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = read_image(args.image).to(device)
    ours = TCMVBR(N=args.N)
    weights = {k: v.clone() for k, v in ours.state_dict().items()}
    records = [_bench(ours, "lae-vbr", x, args, sync)]
    if args.reference:
        from compare import import_reference

        reference = import_reference(args.reference)
        model = reference.TCM_VBR(
            config=[2, 2, 2, 2, 2, 2], head_dim=[8, 16, 32, 32, 16, 8], N=args.N, M=320
        )
        model.load_state_dict(weights)  # the same keys: the same weights, the same bitstream
        records.append(_bench(model, "reference", x, args, sync))
    common = {
        "image": args.image.name,
        "size": list(x.shape[-2:]),
        "model": f"TCMVBR N={args.N} (untrained)",
        "device": str(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "repeats": args.repeats,
    }
    record = {**common, "implementations": records}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
