"""The command's terminal side: exit codes, standard streams, one-line messages, progress.

Every failure is one line on stderr (``lae-vbr: error: …``); warnings too. Progress of a long
encode is one line on stderr, rewritten in place, shown only when stderr is a terminal; nothing
here writes colour codes. ``-`` as a file name is stdin (inputs) or stdout (outputs).
"""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from lae_vbr.atomic import write_atomic
from lae_vbr.codec.container import MAX_FILE_BYTES, Bitstream, read_bitstream

if TYPE_CHECKING:
    from lae_vbr.codec.request import Target

__all__ = [
    "FAILED",
    "OK",
    "PROG",
    "USAGE",
    "Progress",
    "UsageError",
    "check_input",
    "check_output",
    "display_name",
    "fail",
    "gc_paused",
    "is_stdio",
    "read_stdin",
    "read_stream",
    "report",
    "summary_line",
    "warnings_to_stderr",
    "write_output",
]

PROG = "lae-vbr"
OK, FAILED, USAGE = 0, 1, 2
#: The file name that stands for stdin (inputs) or stdout (outputs).
STDIO = "-"


class UsageError(Exception):
    """The command line asks for something impossible (exit code 2)."""


def is_stdio(path: Path) -> bool:
    return str(path) == STDIO


def display_name(path: Path, stdio: str = "<stdin>") -> str:
    return stdio if is_stdio(path) else str(path)


def check_input(path: Path) -> None:
    if is_stdio(path):
        if sys.stdin.isatty():
            raise UsageError("input '-' reads stdin, which is a terminal; pipe a file in")
        return
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    if not path.is_file():
        raise UsageError(f"input is not a file: {path}")


def check_output(path: Path) -> None:
    if is_stdio(path):
        if sys.stdout.isatty():
            raise UsageError("output '-' writes binary data to stdout, which is a terminal; "
                             "redirect it to a file or a pipe")  # fmt: skip
        return
    if path.is_dir():
        raise UsageError(f"output is a folder, not a file: {path}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")


def read_stdin(limit: int = MAX_FILE_BYTES) -> bytes:
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"stdin holds more than {limit} bytes; give a file instead")
    return data


def read_stream(path: Path) -> Bitstream:
    if is_stdio(path):
        return Bitstream.from_bytes(read_stdin())
    return read_bitstream(path)


def write_output(path: Path, data: bytes) -> None:
    if is_stdio(path):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(path, data)


def summary_line(where: str, stream: Bitstream, target: Target, note: str) -> str:
    """The line printed for one file written."""
    rate = "" if stream.lmbda_idx is None else f", λ index {stream.lmbda_idx:g}"
    steps = target.refine_steps
    refined = f", latents refined ({steps} steps)" if steps else ""
    return (
        f"{where}: {stream.width}×{stream.height}{rate}{refined}, {stream.num_bytes} bytes, "
        f"{stream.bpp:.4f} bpp{note}"
    )


def report(output: Path, line: str) -> None:
    """A summary line: stdout, or stderr when stdout carries the data (``output`` is ``-``)."""
    print(line, file=sys.stderr if is_stdio(output) else sys.stdout)


class Progress:
    """Progress of a long encode as one line on stderr, rewritten in place (carriage return
    and spaces, no escape codes), shown only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._encode = ""
        self._width = 0

    def __enter__(self) -> Progress:
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


@contextmanager
def warnings_to_stderr(progress: Progress, label: str = "") -> Iterator[None]:
    """Rate- and quality-control warnings (a target out of reach) as one ``warning:`` line
    each, after ``label`` (the image, for a folder)."""
    from lae_vbr.codec.rate_control import RateControlWarning  # after the model has loaded

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RateControlWarning)
        yield
    progress.clear()
    for warning in caught:
        if issubclass(warning.category, RateControlWarning):
            print(f"{PROG}: warning: {label}{warning.message}", file=sys.stderr)
        else:  # anything else as Python shows it
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def fail(message: object, code: int) -> int:
    text = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return code


@contextmanager
def gc_paused() -> Iterator[None]:
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
