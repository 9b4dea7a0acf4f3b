"""The ``lae-vbr`` command line: its commands, options and their help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from lae_vbr import __version__

from . import commands
from .terminal import PROG, USAGE

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other failure of the command (the
    usage synopsis is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        hint = f"{PROG} {command} --help" if command else f"{PROG} --help"
        self.exit(USAGE, f"{PROG}: error: {message} (see {hint})\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Variable-rate learned image compression (TCM with latent-domain "
        "auto-encoders).",
        epilog="Exit codes: 0 ok, 1 coding failed (bad or foreign file), 2 usage error. "
        "A file name '-' means stdin (input) or stdout (output).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subcommands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_compress(subcommands.add_parser(
        "compress",
        help="code an image (PNG/JPEG/WebP/PPM), or every image of a folder, to files",
        description="Code an image to a file, or every image of a folder IN into the folder "
        "OUT (NAME.lae for each; OUT is created).",
    ))  # fmt: skip

    dec = subcommands.add_parser("decompress", help="decode a compressed file to PNG")
    dec.add_argument("input", type=Path, metavar="IN", help="compressed file ('-': stdin)")
    dec.add_argument("output", type=Path, metavar="OUT", help="PNG to write (*.png, '-': stdout)")
    _add_model_options(dec, "the checkpoint that compressed the file")
    dec.set_defaults(run=commands.decompress)

    info = subcommands.add_parser("info", help="describe a compressed file (no model needed)")
    info.add_argument("input", type=Path, metavar="IN", help="compressed file ('-': stdin)")
    info.add_argument("--json", action="store_true", help="print the fields as JSON")
    info.set_defaults(run=commands.info)
    return parser


def _add_compress(comp: argparse.ArgumentParser) -> None:
    comp.add_argument(
        "input", type=Path, metavar="IN", help="image, or folder of images ('-': stdin)"
    )
    comp.add_argument(
        "output", type=Path, metavar="OUT", help="file to write, or a folder ('-': stdout)"
    )
    _add_model_options(comp)
    _add_rate_options(comp)
    comp.add_argument(
        "--refine-steps",
        type=_count(0),
        default=0,
        metavar="N",
        help="refine the latents for the image with N gradient steps before coding (slower "
        "encoding, better rate-distortion; the decoder is unchanged; 10 take about 0.3 of the "
        "time of the paper's 20-step DLM, for the same gain)",
    )
    comp.set_defaults(run=commands.compress)


def _add_rate_options(comp: argparse.ArgumentParser) -> None:
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
        help="target bit rate of the whole file in bits per pixel (rate control: the entropy "
        "model's estimate, then one or two real encodes)",
    )
    rate.add_argument(
        "--size",
        metavar="BYTES",
        help="largest file size: the file is as large as possible within it; k = 1000, "
        "M = 1000000, Ki = 1024, Mi = 1048576 (e.g. 20k, 64KiB); per image for a folder",
    )
    rate.add_argument(
        "--psnr",
        type=float,
        metavar="DB",
        help="target PSNR of the decoded image in dB (three reconstructions, one encode)",
    )
    rate.add_argument(
        "--total-size",
        metavar="BYTES",
        help="a folder only: all its files together within BYTES, one λ for every image "
        "(suffixes as for --size)",
    )
    rate.add_argument(
        "--quality-map",
        type=Path,
        metavar="MAP",
        help="a quality per region: an 8-bit grayscale image of any size, resized to the "
        "model's latent grid (0 = the lowest λ index, 255 = the highest); stored in the file",
    )
    roi = comp.add_argument_group(
        "region of interest (with --quality, --lmbda, --bpp or --size for the background)"
    )
    roi.add_argument(
        "--roi",
        type=Path,
        metavar="MASK",
        help="code the mask's nonzero pixels --roi-boost λ indices above the rest (an image "
        "of any size); for a folder, a folder of masks named as the images",
    )
    roi.add_argument(
        "--roi-boost",
        type=float,
        metavar="D",
        help="λ indices the region is coded above the background (default 2, clamped to the "
        "highest index)",
    )


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def _device(text: str) -> str:
    """An argparse type: cpu, cuda, cuda:N or mps (whether it exists is checked later)."""
    name = text.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps")
    return name


def _add_model_options(parser: argparse.ArgumentParser, what: str = "the codec") -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help=f"{what}: a project checkpoint, codec bundle or reference state dict "
        "(default: the bundled demo model)",
    )
    parser.add_argument(
        "--device",
        type=_device,
        default="cpu",
        metavar="DEV",
        help="where the networks run: cpu (default), cuda, cuda:N or mps; entropy coding "
        "always runs on the CPU",
    )
    parser.add_argument(
        "--threads",
        type=_count(1),
        metavar="N",
        help="CPU threads for the networks (default: PyTorch's choice, usually one per core)",
    )
