"""Do files decode to what was encoded with other thread counts?  The reproducibility study.

Every (image, λ index) is encoded by two processes (1 and 2 torch threads) and every file is
decoded by two more (1 and 2 threads): 4 combinations per (image, λ). A decode "desynchronises"
when its symbols differ from the encoder's: the file's symbols checksum does not match (or the
rANS stream breaks first). For each combination the record keeps the outcome and whether the
decoded pixels equal those of the other decodes.

    python experiments/determinism/measure.py --arithmetic float64 \\
        --images ../shared/data/kodak ../shared/data/photos/train ../shared/data/photos/val \\
        --lmbda 0 1.7 3.3 5 --out experiments/determinism/float64.json

``--arithmetic float32`` codes the entropy parameters in float32 (how format-1 files were
written): the same measurement shows what the float64 arithmetic fixes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

WORKER = """
import hashlib, json, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.data.tensors import tensor_to_uint8
from lae_vbr.errors import LaeVbrError
job = json.loads(open(sys.argv[3]).read())
codec = ImageCodec.load(job["checkpoint"])
codec.arithmetic = job["arithmetic"]
results = []
for item in job["items"]:
    start = time.perf_counter()
    if sys.argv[1] == "encode":
        stream = codec.encode(read_image(item["image"]), item["lmbda_idx"])
        stream.write(item["file"])
        results.append({"file": item["file"], "bytes": stream.num_bytes,
                        "seconds": time.perf_counter() - start})
        continue
    try:
        pixels = tensor_to_uint8(codec.decode(read_bitstream(item["file"])))
        outcome, digest = "ok", hashlib.sha256(pixels.tobytes()).hexdigest()
    except LaeVbrError as err:
        outcome, digest = str(err), None
    results.append({"file": item["file"], "outcome": outcome, "pixels": digest,
                    "seconds": time.perf_counter() - start})
json.dump(results, open(sys.argv[4], "w"))
"""


def _images(folders: list[Path], limit: int | None) -> list[Path]:
    paths = [p for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() == ".png"]
    return paths[:limit] if limit else paths


def _run(role: str, threads: int, job: dict, work: Path) -> list[dict]:
    job_file, out_file = work / f"{role}{threads}.job.json", work / f"{role}{threads}.out.json"
    job_file.write_text(json.dumps(job))
    cmd = [sys.executable, "-c", WORKER, role, str(threads), str(job_file), str(out_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{role} with {threads} threads failed:\n{proc.stderr[-3000:]}")
    return json.loads(out_file.read_text())


def measure(args: argparse.Namespace) -> dict:
    """Encode with 1 and 2 threads, decode every file with 1 and 2 threads, in 4 processes."""
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    pairs = [(img, idx) for img in _images(args.images, args.max_images) for idx in args.lmbda]
    base = {"checkpoint": str(args.checkpoint or ""), "arithmetic": args.arithmetic}
    if not args.checkpoint:
        from lae_vbr.codec.image_codec import default_checkpoint

        base["checkpoint"] = str(default_checkpoint())
    rows = []
    for enc in (1, 2):
        items = [
            {"image": str(img), "lmbda_idx": idx, "file": str(work / f"e{enc}_{k}.lae")}
            for k, (img, idx) in enumerate(pairs)
        ]
        encoded = _run("encode", enc, {**base, "items": items}, work)
        for dec in (1, 2):
            decoded = _run("decode", dec, {**base, "items": items}, work)
            for (img, idx), e, d in zip(pairs, encoded, decoded, strict=True):
                rows.append({"image": img.name, "lmbda_idx": idx, "encode_threads": enc,
                             "decode_threads": dec, "bytes": e["bytes"],
                             "encode_s": e["seconds"], "decode_s": d["seconds"],
                             "outcome": d["outcome"], "pixels": d["pixels"]})  # fmt: skip
    return {"rows": rows, "pairs": len(pairs)}


def summarise(rows: list[dict]) -> dict:
    """Desynchronised decodes and whether the decoded pixels agree across combinations."""
    by_pair: dict[tuple, set] = {}
    for r in rows:
        by_pair.setdefault((r["image"], r["lmbda_idx"]), set()).add(r["pixels"])
    outcomes = Counter("ok" if r["outcome"] == "ok" else "refused" for r in rows)
    return {
        "combinations": len(rows),
        "decoded": outcomes["ok"],
        "desynchronised (refused with a message)": outcomes["refused"],
        "refusal messages": sorted({r["outcome"] for r in rows if r["outcome"] != "ok"}),
        "pairs whose decodes are bit-identical in every combination": sum(
            1 for v in by_pair.values() if len(v) == 1 and None not in v
        ),
        "pairs": len(by_pair),
        "mean encode s": sum(r["encode_s"] for r in rows) / len(rows),
        "mean decode s": sum(r["decode_s"] for r in rows) / len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: the bundled demo model")
    parser.add_argument("--arithmetic", choices=["float32", "float64"], default="float64")
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--lmbda", type=float, nargs="+", default=[0.0, 1.7, 3.3, 5.0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lae_determinism"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    result = measure(args)
    summary = summarise(result["rows"])
    payload = {
        "command": " ".join(sys.argv),
        "arithmetic": args.arithmetic,
        "summary": summary,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "rows": result["rows"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(hashlib.sha256(args.out.read_bytes()).hexdigest()[:12], args.out)


if __name__ == "__main__":
    main()
