"""``lae-vbr``: compress images to ``.lae`` files, decompress them to PNG, inspect them.

Exit codes: 0 success; 1 the data could not be coded (corrupt, truncated or foreign file,
unreadable image, write failure); 2 the command cannot run as given (bad arguments or option
values, missing input, checkpoint or output folder). Every failure is one line on stderr.

torch and the model code are imported only by the commands that need them, so ``info`` is
fast and works without loading a checkpoint, and a missing rate option is reported before
the model is loaded. ``-`` reads the input from stdin or writes the output to stdout (the
summary line then goes to stderr). Progress of long encodes (refinement, rate control) is
shown on stderr when it is a terminal; nothing here writes colour codes.
"""

from __future__ import annotations

import argparse
import gc
import importlib.resources
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn, TextIO

from lae_vbr import __version__
from lae_vbr.errors import LaeVbrError

from .container import MAX_FILE_BYTES, Bitstream, read_bitstream

if TYPE_CHECKING:
    from torch import Tensor

    from .image_codec import ImageCodec
    from .refine import RefineSchedule

__all__ = ["build_parser", "main"]

PROG = "lae-vbr"
OK, FAILED, USAGE = 0, 1, 2
#: The file name that stands for stdin (inputs) or stdout (outputs).
STDIO = "-"


class UsageError(Exception):
    """The command line asks for something impossible (exit code 2)."""


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
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_compress(commands)

    dec = commands.add_parser("decompress", help="decode a compressed file to PNG")
    dec.add_argument("input", type=Path, metavar="IN", help="compressed file ('-': stdin)")
    dec.add_argument("output", type=Path, metavar="OUT", help="PNG to write (*.png, '-': stdout)")
    _add_model_options(dec, "the checkpoint that compressed the file")
    dec.set_defaults(run=_decompress)

    info = commands.add_parser("info", help="describe a compressed file (no model needed)")
    info.add_argument("input", type=Path, metavar="IN", help="compressed file ('-': stdin)")
    info.add_argument("--json", action="store_true", help="print the fields as JSON")
    info.set_defaults(run=_info)
    return parser


def _add_compress(commands: argparse._SubParsersAction) -> None:
    comp = commands.add_parser(
        "compress",
        help="code an image (PNG/JPEG/WebP/PPM), or every image of a folder, to files",
        description="Code an image to a file, or every image of a folder IN into the folder "
        "OUT (NAME.lae for each; OUT is created).",
    )
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
    comp.set_defaults(run=_compress)


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
        help="target PSNR of the decoded image in dB (two reconstructions, one encode)",
    )
    rate.add_argument(
        "--total-size",
        metavar="BYTES",
        help="a folder only: all its files together within BYTES, one λ for every image "
        "(suffixes as for --size)",
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


# -- commands ---------------------------------------------------------------------------------
#: The rate options whose λ index rate or quality control finds.
_CONTROLLED = ("bpp", "size", "psnr", "total_size")
_RATE_OPTIONS = ("quality", "lmbda", *_CONTROLLED)
_NO_RATE = "--quality, --lmbda, --bpp, --size, --psnr or --total-size"


def _rate_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in _RATE_OPTIONS)


def _check_targets(args: argparse.Namespace) -> None:
    """Refuse bad targets before anything is loaded: numbers that are not positive, sizes
    that do not parse (they are replaced by their bytes), options that do not go together."""
    from .targets import TargetError, parse_size

    for name, unit in (("bpp", "bits per pixel"), ("psnr", "dB")):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"--{name} must be a positive number of {unit}, got {value:g}")
    for name in ("size", "total_size"):
        if getattr(args, name) is not None:
            try:
                setattr(args, name, parse_size(getattr(args, name)))
            except TargetError as err:
                raise UsageError(f"--{name.replace('_', '-')}: {err}") from None
    if args.refine_steps and (args.psnr is not None or args.total_size is not None):
        raise UsageError(
            "--refine-steps works with --quality, --lmbda, --bpp and --size, "
            "not with --psnr or --total-size"
        )


def _compress(args: argparse.Namespace) -> int:
    if not _is_stdio(args.input) and args.input.is_dir():
        from .cli_folder import compress_folder

        return compress_folder(args)
    _check_input(args.input)
    _check_output(args.output)
    _check_targets(args)
    if args.total_size is not None:
        raise UsageError("--total-size is for a folder of images; for one image use --size")
    _precheck_rate(args)  # before torch is imported: a usage mistake costs no model load
    from .images import read_image, read_image_bytes

    if _is_stdio(args.input):  # a bad image fails before the model is loaded
        x = read_image_bytes(_read_stdin(), "<stdin>")
    else:
        x = read_image(args.input)
    codec = _load(args, x.shape[-2] * x.shape[-1])
    lmbda_idx = _choose_rate(codec, args)
    with _Progress() as progress:
        stream, note = _encode(codec, x, lmbda_idx, args, progress)
    _write_output(args.output, stream.to_bytes())
    where = f"{_name(args.input)} -> {_name(args.output, '<stdout>')}"
    _report(args, _summary(where, stream, args, note))
    return OK


def _summary(where: str, stream: Bitstream, args: argparse.Namespace, note: str) -> str:
    """The line printed for one file written."""
    rate = "" if stream.lmbda_idx is None else f", λ index {stream.lmbda_idx:g}"
    refined = f", latents refined ({args.refine_steps} steps)" if args.refine_steps else ""
    return (
        f"{where}: {stream.width}×{stream.height}{rate}{refined}, {stream.num_bytes} bytes, "
        f"{stream.bpp:.4f} bpp{note}"
    )


@contextmanager
def _warnings_to_stderr(progress: _Progress, label: str = "") -> Iterator[None]:
    """Rate-control warnings (a target out of reach) as one ``warning:`` line each, after
    ``label`` (the image, for a folder)."""
    from .rate_control import RateControlWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RateControlWarning)
        yield
    progress.clear()
    for warning in caught:
        print(f"{PROG}: warning: {label}{warning.message}", file=sys.stderr)


def _encode(
    codec: ImageCodec,
    x: Tensor,
    lmbda_idx: float | None,
    args: argparse.Namespace,
    progress: _Progress,
    label: str = "",
) -> tuple[Bitstream, str]:
    """The stream (plain, refined, or rate- or quality-controlled) and a note for the
    summary line; ``label`` starts its warnings."""
    refine = None
    if args.refine_steps:
        from .refine import RefineSchedule

        refine = RefineSchedule(steps=args.refine_steps)
    if any(getattr(args, name) is not None for name in ("bpp", "size", "psnr")):
        with _warnings_to_stderr(progress, label):
            return _controlled(codec, x, args, refine, progress)
    if refine is not None:
        from .refine import refine_encode

        return refine_encode(codec, x, lmbda_idx, refine, on_step=progress.step)[0], ""
    return codec.encode(x, lmbda_idx), ""


def _controlled(
    codec: ImageCodec,
    x: Tensor,
    args: argparse.Namespace,
    refine: RefineSchedule | None,
    progress: _Progress,
) -> tuple[Bitstream, str]:
    """Code for ``--psnr``, ``--size`` or ``--bpp``; the note says how it went."""
    if args.psnr is not None:
        from .quality_control import encode_to_psnr

        quality = encode_to_psnr(codec, x, args.psnr)
        about = "" if quality.measured else "about "
        rounds = _count_of(len(quality.rounds), "reconstruction")
        return quality.stream, (  # type: ignore[return-value]
            f", {about}{quality.psnr:.2f} dB (target {args.psnr:g} dB, {rounds}, 1 encode)"
        )
    from .rate_control import encode_to_bpp, encode_to_size

    step = progress.step if refine else None
    if args.size is not None:
        result = encode_to_size(codec, x, args.size, refine=refine, on_encode=progress.encode,
                                on_step=step)  # fmt: skip
        note = f" (at most {args.size} bytes, {_count_of(result.encodes, 'encode')})"
    else:
        result = encode_to_bpp(codec, x, args.bpp, refine=refine, on_encode=progress.encode,
                               on_step=step)  # fmt: skip
        note = f" (target {args.bpp:g} bpp, {_count_of(result.encodes, 'encode')})"
    return result.stream, note  # type: ignore[return-value]


def _count_of(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _choose_rate(codec: ImageCodec, args: argparse.Namespace) -> float | None:
    """The λ index from the rate options (one for a variable-rate model, none otherwise);
    None with a target, whose λ index rate or quality control finds."""
    from .errors import RateError

    if codec.variable_rate and not _rate_given(args):
        lo, hi = min(codec.lmbdas), max(codec.lmbdas)
        raise UsageError(
            f"model {codec.id} is variable-rate: pass --quality Q (a λ index in "
            f"[0, {codec.max_index}]), --lmbda L (a λ in [{lo:g}, {hi:g}]), --bpp TARGET, "
            "--size BYTES or --psnr DB"
        )
    if not codec.variable_rate and _rate_given(args):
        raise UsageError(f"model {codec.id} is fixed-rate: it takes no {_NO_RATE}")
    if any(getattr(args, name) is not None for name in _CONTROLLED):
        return None
    try:
        return codec.rate_index(quality=args.quality, lmbda=args.lmbda)
    except RateError as err:
        raise UsageError(str(err)) from err


def _decompress(args: argparse.Namespace) -> int:
    _check_input(args.input)
    _check_output(args.output)
    if not _is_stdio(args.output) and args.output.suffix.lower() != ".png":
        raise UsageError(f"the output is written as PNG; name it *.png, not {args.output.name}")
    stream = _read_stream(args.input)  # a bad file fails before the model is loaded
    codec = _load(args, stream.height * stream.width)
    from .images import png_bytes

    _write_output(args.output, png_bytes(codec.decode(stream)))
    size = f"{stream.width}×{stream.height}"
    _report(args, f"{_name(args.input)} -> {_name(args.output, '<stdout>')}: {size}")
    return OK


def _info(args: argparse.Namespace) -> int:
    _check_input(args.input)
    stream = _read_stream(args.input)
    if args.json:
        print(json.dumps({"file": _name(args.input), **stream.describe()}, indent=2))
    else:
        print(_describe(Path(_name(args.input)), stream))
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


# -- checks, loading, standard streams ----------------------------------------------------------
def _is_stdio(path: Path) -> bool:
    return str(path) == STDIO


def _name(path: Path, stdio: str = "<stdin>") -> str:
    return stdio if _is_stdio(path) else str(path)


def _check_input(path: Path) -> None:
    if _is_stdio(path):
        if sys.stdin.isatty():
            raise UsageError("input '-' reads stdin, which is a terminal; pipe a file in")
        return
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    if not path.is_file():
        raise UsageError(f"input is not a file: {path}")


def _check_output(path: Path) -> None:
    if _is_stdio(path):
        if sys.stdout.isatty():
            raise UsageError("output '-' writes binary data to stdout, which is a terminal; "
                             "redirect it to a file or a pipe")  # fmt: skip
        return
    if path.is_dir():
        raise UsageError(f"output is a folder, not a file: {path}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")


def _read_stdin(limit: int = MAX_FILE_BYTES) -> bytes:
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"stdin holds more than {limit} bytes; give a file instead")
    return data


def _read_stream(path: Path) -> Bitstream:
    if _is_stdio(path):
        return Bitstream.from_bytes(_read_stdin())
    return read_bitstream(path)


def _write_output(path: Path, data: bytes) -> None:
    if _is_stdio(path):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        path.write_bytes(data)


def _report(args: argparse.Namespace, line: str) -> None:
    """The summary line: stdout, or stderr when stdout carries the data."""
    print(line, file=sys.stderr if _is_stdio(args.output) else sys.stdout)


def _precheck_rate(args: argparse.Namespace) -> None:
    """Refuse a missing or superfluous rate option from what the checkpoint file records,
    without loading the model (see :mod:`.peek`); undecided files are checked after loading."""
    from .peek import peek_rate

    path = args.checkpoint or Path(
        str(importlib.resources.files("lae_vbr").joinpath("assets", "demo.pt"))
    )
    summary = peek_rate(path, path.stem) if path.is_file() else None
    if summary is None:
        return
    given = _rate_given(args)
    if summary.variable_rate and not given:
        quality = lmbda = ""
        if summary.lmbdas:
            quality = f" (a λ index in [0, {len(summary.lmbdas) - 1}])"
            lmbda = f" (a λ in [{min(summary.lmbdas):g}, {max(summary.lmbdas):g}])"
        raise UsageError(
            f"model {summary.name!r} is variable-rate: pass --quality Q{quality}, "
            f"--lmbda L{lmbda}, --bpp TARGET, --size BYTES or --psnr DB"
        )
    if not summary.variable_rate and given:
        raise UsageError(f"model {summary.name!r} is fixed-rate: it takes no {_NO_RATE}")


def _load(args: argparse.Namespace, pixels: int) -> ImageCodec:
    """The model of ``args``, in a process set up to code images of at most ``pixels``."""
    import torch

    from lae_vbr.heap import keep_freed_memory_for
    from lae_vbr.models.state_dict import CheckpointError

    from .image_codec import ImageCodec

    keep_freed_memory_for(pixels)  # the command codes and exits: freed maps are reused
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {args.device}: this machine has "
                         f"{torch.cuda.device_count()} GPU(s)")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {args.device}: MPS is not available here; use --device cpu")
    try:
        return ImageCodec.load(args.checkpoint, device=None if device.type == "cpu" else device)
    except CheckpointError as err:
        raise UsageError(str(err)) from err


class _Progress:
    """Progress of a long encode as one line on stderr, rewritten in place (carriage return
    and spaces, no escape codes), shown only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._encode = ""
        self._width = 0

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.clear()

    def encode(self, number: int, most: int) -> None:
        self._encode = f"rate control: encode {number} of at most {most}"
        self._show(self._encode)

    def step(self, step: int, steps: int) -> None:
        prefix = f"{self._encode}, " if self._encode else ""
        self._show(f"{prefix}refining the latents: step {step}/{steps}")

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _show(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = max(self._width, len(text))


def _fail(message: object, code: int) -> int:
    text = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return code


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for one command: importing torch and building
    the model create about a million long-lived objects, and the collections they trigger
    took 0.3 s of a 2 s compress of a small image. Tensors are freed by reference counting
    either way; the collector's state is restored afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message (or the help)
        return exit_.code if isinstance(exit_.code, int) else USAGE
    try:
        with _gc_paused():
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
