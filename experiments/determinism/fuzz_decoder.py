"""The long fuzz run: damaged files through ``lae-vbr decompress``, none may break it.

    python experiments/determinism/fuzz_decoder.py --cases 1200 \\
        --image ../shared/data/kodak/kodim01.png --other ../shared/data/kodak/kodim02.png \\
        --out experiments/determinism/fuzz.json

Two valid files of the bundled demo model (top-left 256×256 crops of the images, so a case
takes a fraction of a second) are damaged in every way ``tests/damage.py`` knows
(truncations at every header field, bit flips, rewritten size and length fields, random bytes,
spliced files, payload damage behind a recomputed CRC) and decompressed through the CLI's
``main`` in this process (the model is loaded once, not per case), so a crash would end the
run. Per case: the exit code (0: an image,
1: a one-line error), stderr, and the time against a clean decode (an alarm stops any case at
10× that: a hang). The peak resident memory of the run is recorded against a clean decode's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from damage import KINDS, damaged_files  # noqa: E402
from lae_vbr.cli import commands  # noqa: E402
from lae_vbr.cli import main as cli  # noqa: E402
from lae_vbr.codec.image_codec import ImageCodec  # noqa: E402
from lae_vbr.codec.images import read_image  # noqa: E402


class HangError(BaseException):
    """A case ran past its time limit (a BaseException, so the CLI cannot swallow it)."""


def _decompress(path: Path, png: Path, limit: float) -> tuple[int, str, float]:
    def alarm(*_: object) -> None:
        raise HangError

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    err = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli(["decompress", str(path), str(png)])
    except HangError:
        code = -1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return code, err.getvalue(), time.perf_counter() - start


def _reason(message: str) -> str:
    """The kind of error, without the details that vary per case (sizes, byte counts)."""
    text = message.removeprefix("lae-vbr: error: ")
    return text.split(":")[0].split("(")[0].strip()


def _case(kind: str, path: Path, png: Path, clean: float) -> dict:
    """One damaged file through the CLI, stopped at 10× the clean decode time."""
    code, err, seconds = _decompress(path, png, 10 * clean)
    lines = err.strip().splitlines()
    return {
        "kind": kind,
        "exit": code,
        "outcome": {0: "decoded", 1: "refused", -1: "hang"}.get(code, f"exit {code}"),
        "seconds": round(seconds, 4),
        "ratio": round(seconds / clean, 3),
        "lines": len(lines),
        "message": lines[-1] if lines else "",
    }


def run(args: argparse.Namespace) -> dict:
    codec = ImageCodec.load(None)
    # lae-vbr decompress as it runs, with the model loaded once instead of per case
    commands.load_codec_for = lambda args, pixels: codec
    crop = (slice(None), slice(None), slice(0, args.crop), slice(0, args.crop))
    data = codec.encode(read_image(args.image)[crop], 2.5).to_bytes()
    other = codec.encode(read_image(args.other)[crop], 1.0).to_bytes()
    work = Path(tempfile.mkdtemp())
    path, png = work / "case.lae", work / "case.png"
    path.write_bytes(data)
    _decompress(path, png, 600)  # one-off initialisation is not a decode's cost
    cleans = [_decompress(path, png, 600)[2]]
    rss_clean = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cases = damaged_files(data, other, random.Random(args.seed))
    rows = []
    for n in range(args.cases):
        if n % 20 == 19:  # the machine's speed drifts: re-measure a clean decode now and then
            path.write_bytes(data)
            cleans.append(_decompress(path, png, 600)[2])
        kind, bad = next(cases)
        path.write_bytes(bad)
        rows.append(_case(kind, path, png, max(cleans[-3:])))
    tally = Counter((r["kind"], r["outcome"]) for r in rows)
    return {
        "clean_decode_s": {"min": min(cleans), "max": max(cleans)},
        "max_ratio_to_clean": max(r["ratio"] for r in rows),
        "max_ratio_by_kind": {k: max(r["ratio"] for r in rows if r["kind"] == k) for k in KINDS},
        "tracebacks": sum("Traceback" in r["message"] for r in rows),
        "multi_line_errors": sum(r["lines"] > (r["exit"] == 1) for r in rows),
        "peak_rss_mb_clean": rss_clean / 1024,
        "peak_rss_mb_run": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "outcomes": {f"{k} {o}": n for (k, o), n in sorted(tally.items())},
        "messages": dict(Counter(_reason(r["message"]) for r in rows if r["exit"] == 1)),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1200)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--other", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--crop", type=int, default=256, help="top-left crop of each image")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {"command": " ".join(sys.argv), **run(args)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
