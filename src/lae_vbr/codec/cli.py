"""``lae-vbr``: compress images to ``.lae`` files, decompress them to PNG, inspect them.

Exit codes: 0 success; 1 the data could not be coded (corrupt, truncated or foreign file,
unreadable image, write failure); 2 the command cannot run as given (bad arguments or option
values, missing input, checkpoint or output folder). Every failure is one line on stderr.

torch and the model code are imported only by the commands that need them, so ``info`` is
fast and works without loading a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lae_vbr.errors import LaeVbrError

from .container import Bitstream, read_bitstream

if TYPE_CHECKING:
    from .image_codec import ImageCodec

__all__ = ["build_parser", "main"]

PROG = "lae-vbr"
OK, FAILED, USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line asks for something impossible (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Variable-rate learned image compression (TCM with latent-domain "
        "auto-encoders).",
        epilog="Exit codes: 0 ok, 1 coding failed (bad or foreign file), 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    comp = commands.add_parser("compress", help="code an image (PNG/JPEG/WebP/PPM) to a file")
    comp.add_argument("input", type=Path, metavar="IN", help="image to compress")
    comp.add_argument("output", type=Path, metavar="OUT", help="compressed file to write")
    _add_checkpoint(comp)
    rate = comp.add_argument_group(
        "rate (variable-rate models need exactly one; fixed-rate models take none)"
    ).add_mutually_exclusive_group()
    rate.add_argument(
        "--quality", type=float, metavar="Q", help="λ index, fractional allowed (0 = lowest rate)"
    )
    rate.add_argument(
        "--lmbda", type=float, metavar="L", help="λ value within the trained range (log-linear)"
    )
    rate.add_argument(
        "--bpp",
        type=float,
        metavar="TARGET",
        help="target bit rate of the whole file in bits per pixel (rate control with the R-λ "
        "model: two encodes)",
    )
    comp.add_argument(
        "--refine-steps",
        type=_steps,
        default=0,
        metavar="N",
        help="refine the latents for the image with N gradient steps before coding (slower "
        "encoding, better rate-distortion; the decoder is unchanged; 20 = the paper's DLM)",
    )
    comp.set_defaults(run=_compress)

    dec = commands.add_parser("decompress", help="decode a compressed file to PNG")
    dec.add_argument("input", type=Path, metavar="IN", help="compressed file")
    dec.add_argument("output", type=Path, metavar="OUT", help="PNG image to write (.png)")
    _add_checkpoint(dec, "the checkpoint that compressed the file")
    dec.set_defaults(run=_decompress)

    info = commands.add_parser("info", help="describe a compressed file (no model needed)")
    info.add_argument("input", type=Path, metavar="IN", help="compressed file")
    info.add_argument("--json", action="store_true", help="print the fields as JSON")
    info.set_defaults(run=_info)
    return parser


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _add_checkpoint(parser: argparse.ArgumentParser, what: str = "the codec") -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help=f"{what}: a project checkpoint, codec bundle or reference state dict "
        "(default: the bundled demo model)",
    )


# -- commands ---------------------------------------------------------------------------------
def _compress(args: argparse.Namespace) -> int:
    _check_input(args.input)
    _check_output(args.output)
    from .images import read_image

    if args.bpp is not None and not (math.isfinite(args.bpp) and args.bpp > 0):
        raise UsageError(f"--bpp must be a positive number of bits per pixel, got {args.bpp:g}")
    x = read_image(args.input)  # a bad image fails before the model is loaded
    codec = _load(args.checkpoint)
    lmbda_idx = _choose_rate(codec, args)
    refine = None
    if args.refine_steps:
        from .refine import RefineSchedule

        refine = RefineSchedule(steps=args.refine_steps)
    note = ""
    if args.bpp is not None:
        from .rate_control import RateControlWarning, encode_to_bpp

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RateControlWarning)
            result = encode_to_bpp(codec, x, args.bpp, refine=refine)
        for warning in caught:
            print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
        stream = result.stream
        note = f" (target {args.bpp:g} bpp, {result.encodes} encodes)"
    elif refine is not None:
        from .refine import refine_encode

        stream, _ = refine_encode(codec, x, lmbda_idx, refine)
    else:
        stream = codec.encode(x, lmbda_idx)
    stream.write(args.output)
    rate = "" if stream.lmbda_idx is None else f", λ index {stream.lmbda_idx:g}"
    refined = f", latents refined ({args.refine_steps} steps)" if refine else ""
    print(
        f"{args.input} -> {args.output}: {stream.width}×{stream.height}{rate}{refined}, "
        f"{stream.num_bytes} bytes, {stream.bpp:.4f} bpp{note}"
    )
    return OK


def _choose_rate(codec: ImageCodec, args: argparse.Namespace) -> float | None:
    """The λ index from the rate options (one for a variable-rate model, none otherwise);
    None with ``--bpp``, whose λ index rate control finds."""
    from .errors import RateError

    given = any(v is not None for v in (args.quality, args.lmbda, args.bpp))
    if codec.variable_rate and not given:
        lo, hi = min(codec.lmbdas), max(codec.lmbdas)
        raise UsageError(
            f"model {codec.id} is variable-rate: pass --quality Q (a λ index in "
            f"[0, {codec.max_index}]), --lmbda L (a λ in [{lo:g}, {hi:g}]) or --bpp TARGET"
        )
    if not codec.variable_rate and given:
        raise UsageError(f"model {codec.id} is fixed-rate: it takes no --quality, --lmbda or --bpp")
    if args.bpp is not None:
        return None
    try:
        return codec.rate_index(quality=args.quality, lmbda=args.lmbda)
    except RateError as err:
        raise UsageError(str(err)) from err


def _decompress(args: argparse.Namespace) -> int:
    _check_input(args.input)
    _check_output(args.output)
    if args.output.suffix.lower() != ".png":
        raise UsageError(f"the output is written as PNG; name it *.png, not {args.output.name}")
    stream = read_bitstream(args.input)  # a bad file fails before the model is loaded
    codec = _load(args.checkpoint)
    from .images import write_png

    write_png(codec.decode(stream), args.output)
    print(f"{args.input} -> {args.output}: {stream.width}×{stream.height}")
    return OK


def _info(args: argparse.Namespace) -> int:
    _check_input(args.input)
    stream = read_bitstream(args.input)
    if args.json:
        print(json.dumps({"file": str(args.input), **stream.describe()}, indent=2))
    else:
        print(_describe(args.input, stream))
    return OK


def _describe(path: Path, stream: Bitstream) -> str:
    if stream.lmbda_idx is None:
        rate = "fixed-rate model"
    else:
        rate = f"λ index {stream.lmbda_idx:.6g} (variable-rate model)"
    rows = [
        ("file", f"{path} ({stream.num_bytes} bytes, format version {stream.version})"),
        ("model", f"{stream.model.name} (weights {stream.model.digest.hex()})"),
        ("rate", rate),
        ("image", f"{stream.width}×{stream.height} (width×height)"),
        ("bpp", f"{stream.bpp:.4f}"),
        (
            "coding",
            f"{stream.arithmetic} entropy parameters, "
            f"{'checksummed' if stream.checked else 'no checksums'}",
        ),
        (
            "bytes",
            f"header {stream.overhead}, z {len(stream.z_string)}, y {len(stream.y_string)}",
        ),
    ]
    return "\n".join(f"{key + ':':<7} {value}" for key, value in rows)


# -- checks and loading -----------------------------------------------------------------------
def _check_input(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    if not path.is_file():
        raise UsageError(f"input is not a file: {path}")


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"output is a folder, not a file: {path}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")


def _load(checkpoint: Path | None) -> ImageCodec:
    from lae_vbr.models.state_dict import CheckpointError

    from .image_codec import ImageCodec

    try:
        return ImageCodec.load(checkpoint)
    except CheckpointError as err:
        raise UsageError(str(err)) from err


def _fail(message: object, code: int) -> int:
    text = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message (or the help)
        return exit_.code if isinstance(exit_.code, int) else USAGE
    try:
        return args.run(args)
    except UsageError as err:
        return _fail(err, USAGE)
    except OSError as err:
        detail = f"{err.strerror}: {err.filename}" if err.strerror and err.filename else err
        return _fail(detail, FAILED)
    except LaeVbrError as err:  # a bad file, image or model: ContainerError, CodecError, ...
        return _fail(err, FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:  # a crash in model code must still not print a traceback
        return _fail(f"unexpected {type(err).__name__}: {err}", FAILED)


if __name__ == "__main__":
    sys.exit(main())
