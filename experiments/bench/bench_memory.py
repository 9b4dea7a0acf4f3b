"""Peak memory and time per megapixel of TCM-VBR compress / decompress against image size.

    python experiments/bench/bench_memory.py --sizes 768x512 1920x1080 3840x2160 6000x4000 \
        --out experiments/bench/memory_cpu.json [--untiled-sizes 768x512 1536x1024]

Every (size, phase) runs in a fresh subprocess, so its ``ru_maxrss`` is that phase's peak
resident memory alone (model, image and coding; the model's own share is recorded as
``baseline_rss_gb``). The compress process writes the strings for the decompress process. The
image is kodim01 mirror-tiled to the size (the same content statistics per pixel at every
size, so the number of symbols per megapixel, and hence the entropy-coding time, is
comparable). Untrained TCM-VBR N=64 weights from a fixed seed, λ index 3, one thread. Time is
recorded both as wall-clock and as the process's CPU time: on a shared machine only the latter
is stable.

``--heaps keep system`` measures every size twice: with freed memory kept in the process's heap
(``lae_vbr.heap.keep_freed_memory``, what ``lae-vbr`` does; the default) and with glibc's
default of returning large blocks to the system (the code before it).

``--control bpp size psnr refine`` adds one row per coding path above the model at each size,
each in its own process like the plain phases: ``encode_to_bpp`` (0.3 bpp), ``encode_to_size``
(the bytes of 0.3 bpp), ``encode_to_psnr`` (30 dB) and ``refine_encode`` (one step), through
``ImageCodec`` as ``lae-vbr compress --bpp/--size/--psnr/--refine-steps`` runs them. Their
peaks are compared with ``compress`` (``peak_vs_compress``). The untrained model's LAEs are the
identity, so its rate does not move with λ: the searches end at a range end (with the warning
the command prints), having run the analysis, the estimates or reconstructions and the encode.

``--untiled-sizes`` also measures the whole-map path (row bands and attention chunking off) at
those sizes; each record carries SHA-256 digests of the strings and the decoded image, so the
two paths can be compared. Each worker caps its address space (``--max-gb``) so that a size
that does not fit fails instead of swapping.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lae_vbr.heap import keep_freed_memory

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "kodak" / "kodim01.png"
#: The coding paths above the model (``--control``) and their targets.
CONTROL_PHASES = ("bpp", "size", "psnr", "refine")
CONTROL_BPP = 0.3
CONTROL_PSNR = 30.0


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` → (height, width)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def tiled_image(path: Path, height: int, width: int):
    """kodim01 mirror-tiled (numpy's symmetric padding) to height × width, as (1, 3, H, W)."""
    import numpy as np
    import torch
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    rows, cols = max(0, height - rgb.shape[0]), max(0, width - rgb.shape[1])
    tiled = np.pad(rgb, ((0, rows), (0, cols), (0, 0)), mode="symmetric")[:height, :width]
    return torch.from_numpy(tiled.copy()).permute(2, 0, 1)[None].float().div(255)


def bench_model(untiled: bool, layout: str):
    """Seeded untrained TCM-VBR N=64; ``untiled`` switches bands and chunks off; ``layout``
    ``nhwc``: the transforms channels-last (not ImageCodec's default: with it, 4K compress
    peaked at 7.36 GB, against 5.67 GB in NCHW)."""
    import torch

    from lae_vbr.models import TCMVBR, banded, layers

    if untiled:
        banded.BAND_PIXELS = 1 << 62
        layers.ATTENTION_CHUNK_ELEMENTS = 1 << 62
    torch.manual_seed(0)
    model = TCMVBR(N=64).eval()
    model.update()
    if layout == "nhwc":
        model.transforms_to_channels_last()
    return model


def coding_path(phase: str, model, x, lmbda_index: float) -> dict:
    """One coding path above the model (``--control``), through ImageCodec; its record."""
    import warnings

    from lae_vbr.codec.image_codec import ImageCodec
    from lae_vbr.codec.quality_control import encode_to_psnr
    from lae_vbr.codec.rate_control import encode_to_bpp, encode_to_size
    from lae_vbr.codec.refine import RefineSchedule, refine_encode
    from lae_vbr.models.registry import PAPER_MSE_LMBDAS, LoadedCodec

    codec = ImageCodec(LoadedCodec(model, list(PAPER_MSE_LMBDAS), "tcm-vbr-bench"))
    bytes_at_target = round(CONTROL_BPP * x.shape[-2] * x.shape[-1] / 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the out-of-range warning of the identity LAEs
        if phase == "bpp":
            stream = encode_to_bpp(codec, x, CONTROL_BPP).stream
        elif phase == "size":
            stream = encode_to_size(codec, x, bytes_at_target).stream
        elif phase == "psnr":
            stream = encode_to_psnr(codec, x, CONTROL_PSNR).stream
        else:
            stream = refine_encode(codec, x, lmbda_index, RefineSchedule(steps=1))[0]
    return {"bytes": stream.num_bytes, "lmbda_idx": stream.lmbda_idx}


def _plain(args: argparse.Namespace, model, x, height: int, width: int) -> dict:
    """``compress`` (writes the strings for the decompress process) or ``decompress``."""
    import torch

    if args.phase == "compress":
        out = model.compress(x, args.lmbda_index)
        digest = hashlib.sha256(b"".join(s[0] for s in out["strings"])).hexdigest()
        torch.save(out["strings"], args.strings)
        return {"bytes": sum(len(s[0]) for s in out["strings"]), "strings_sha256": digest}
    strings = torch.load(args.strings)
    x_hat = model.decompress(strings, (height, width), args.lmbda_index)["x_hat"]
    return {"x_hat_sha256": hashlib.sha256(x_hat.numpy().tobytes()).hexdigest()}


def peak_rss_gb() -> float:
    """The process's peak resident memory so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


def resident_gb() -> float:
    """The resident memory now (Linux), GiB: what is live, plus freed memory the heap keeps."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**30


def worker(args: argparse.Namespace) -> None:
    """One phase at one size in this process; prints a JSON record."""
    import torch

    if args.heap == "keep" and not keep_freed_memory():
        raise SystemExit("--heaps keep needs glibc")
    torch.set_num_threads(1)
    limit = int(args.max_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    height, width = parse_size(args.size)
    model = bench_model(args.untiled, args.layout)
    x = tiled_image(args.image, height, width) if args.phase != "decompress" else None
    baseline = peak_rss_gb()
    wall, cpu = time.perf_counter(), time.process_time()
    if args.phase in CONTROL_PHASES:
        extra = coding_path(args.phase, model, x, args.lmbda_index)
    else:
        with torch.inference_mode():
            extra = _plain(args, model, x, height, width)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    megapixels = height * width / 1e6
    record = {
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "baseline_rss_gb": round(baseline, 3),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_mp": round(cpu / megapixels, 3),
        "wall_s_per_mp": round(wall / megapixels, 3),
        **extra,
    }
    print(json.dumps(record))


def _run_phase(
    args: argparse.Namespace, size: str, phase: str, untiled: bool, strings: Path, heap: str
) -> dict:
    """A fresh worker process for one phase; its record, or the reason it failed."""
    cmd = [sys.executable, __file__, "--worker", "--size", size, "--phase", phase, "--heap", heap]
    cmd += ["--image", str(args.image), "--strings", str(strings), "--max-gb", str(args.max_gb)]
    cmd += ["--lmbda-index", str(args.lmbda_index), "--layout", args.layout]
    cmd += ["--untiled"] if untiled else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1:] or [f"rc {done.returncode}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, size: str, untiled: bool, heap: str) -> dict:
    """Compress then decompress one size; prints and returns the record."""
    height, width = parse_size(size)
    record = {"size": size, "megapixels": round(height * width / 1e6, 3), "untiled": untiled}
    record["heap"] = heap
    with tempfile.TemporaryDirectory() as tmp:
        strings = Path(tmp) / "strings.pt"
        record["compress"] = _run_phase(args, size, "compress", untiled, strings, heap)
        if "failed" not in record["compress"]:
            record["decompress"] = _run_phase(args, size, "decompress", untiled, strings, heap)
        for phase in args.control:
            row = _run_phase(args, size, phase, untiled, strings, heap)
            if "peak_rss_gb" in row and "peak_rss_gb" in record["compress"]:
                row["peak_vs_compress"] = round(
                    row["peak_rss_gb"] / record["compress"]["peak_rss_gb"], 3
                )
            record[phase] = row
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["768x512", "1920x1080", "3840x2160"])
    parser.add_argument("--untiled-sizes", nargs="*", default=[])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--lmbda-index", type=float, default=3.0)
    parser.add_argument("--max-gb", type=float, default=8.0, help="address-space cap per worker")
    parser.add_argument("--heaps", nargs="+", choices=["keep", "system"], default=["keep"])
    parser.add_argument(
        "--layout", choices=["nchw", "nhwc"], default="nchw", help="the transforms' layout"
    )
    parser.add_argument(
        "--control", nargs="*", choices=CONTROL_PHASES, default=[], help="coding paths to add"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--heap", choices=["keep", "system"], help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument(
        "--phase", choices=["compress", "decompress", *CONTROL_PHASES], help=argparse.SUPPRESS
    )
    parser.add_argument("--strings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--untiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = [measure(args, s, True, heap) for s in args.untiled_sizes for heap in args.heaps]
    runs += [measure(args, s, False, heap) for s in args.sizes for heap in args.heaps]
    if args.out:
        import torch

        record = {
            "command": " ".join(["python", *sys.argv]),
            "model": "TCMVBR N=64 (untrained, seed 0), λ index 3",
            "image": f"{args.image.name}, mirror-tiled to each size",
            "threads": 1,
            "layout": args.layout,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "runs": runs,
        }
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
